"""The `orgs` claim (organization memberships): read into the caller's principal as an
immutable org id -> role mapping, and any token whose claim is not exactly the shared
schema's shape is refused with 401, however validly signed. Real app, real EdDSA tokens."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import jwt
import pytest
from jsonschema import Draft202012Validator

from rag_service.auth.orgs import MAX_ORG_ID_CHARS, MAX_ORGS, parse_orgs
from rag_service.auth.tokens import MAX_TOKEN_CHARS, CurrentUser
from rag_service.core.roles import OrgRole
from rag_service.errors import Unauthorized

SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "shared-schemas" / "jwt-claims.schema.json").read_text())
ORGS_SCHEMA = Draft202012Validator(SCHEMA["properties"]["orgs"])


def org_list(n: int, role: str = "member") -> list[dict[str, str]]:
    return [{"id": f"org-{i}", "role": role} for i in range(n)]


# Validly signed tokens whose `orgs` claim must be refused, each for a reason of its own.
MALFORMED: dict[str, Any] = {
    "null": None,
    "an object, not a list": {"org-1": "owner"},
    "a string": "org-1:owner",
    "a number": 1,
    "too many entries": org_list(MAX_ORGS + 1),
    "far too many entries": org_list(2_000),
    "an entry that is a string": ["org-1"],
    "an entry that is a list": [["org-1", "owner"]],
    "an entry without role": [{"id": "org-1"}],
    "an entry without id": [{"role": "owner"}],
    "an extra key in an entry": [{"id": "org-1", "role": "member", "scope": "write"}],
    "an unknown role": [{"id": "org-1", "role": "superuser"}],
    "a role in capitals": [{"id": "org-1", "role": "Owner"}],
    "two roles in one": [{"id": "org-1", "role": "admin,owner"}],
    "a list of roles": [{"id": "org-1", "role": ["owner"]}],
    "an empty role": [{"id": "org-1", "role": ""}],
    "a null role": [{"id": "org-1", "role": None}],
    "a numeric id": [{"id": 7, "role": "member"}],
    "an empty id": [{"id": "", "role": "member"}],
    "a blank id": [{"id": "   ", "role": "member"}],
    "an id longer than the bound": [{"id": "o" * (MAX_ORG_ID_CHARS + 1), "role": "member"}],
    "the same organization twice": [{"id": "org-1", "role": "member"}, {"id": "org-1", "role": "member"}],
    "the same organization with two roles": [{"id": "org-1", "role": "member"}, {"id": "org-1", "role": "owner"}],
    "one bad entry among good ones": [*org_list(3), {"id": "org-x", "role": "root"}],
}
# JSON Schema's uniqueItems only catches identical entries.
BEYOND_THE_SCHEMA = {"the same organization with two roles"}


def mint_with_orgs(issuer: Any, user_id: str, orgs: Any) -> str:
    """Signed by the trusted issuer with `orgs` set as given (`None` too: a JSON null)."""
    claims = {**issuer.claims(user_id), "orgs": orgs}
    key = issuer.current_key
    return jwt.encode(claims, key.private_key, algorithm="EdDSA", headers={"kid": key.kid})


async def me(client: Any, token: str) -> Any:
    return await client.get("/me", headers={"Authorization": f"Bearer {token}"})


async def test_memberships_reach_the_principal_and_me(client, issuer, user_id):
    orgs = [{"id": "org-a", "role": "owner"}, {"id": "org-b", "role": "admin"}, {"id": "org-c", "role": "member"}]
    response = await me(client, issuer.mint(user_id, orgs=orgs))
    assert response.status_code == 200, response.text
    assert response.json()["orgs"] == orgs
    for absent in ({}, {"orgs": []}):
        response = await me(client, issuer.mint(user_id, **absent))
        assert response.status_code == 200 and response.json()["orgs"] == []


async def test_the_largest_allowed_claim_is_accepted(client, issuer, user_id):
    orgs = [{"id": f"{i:02d}" + "o" * (MAX_ORG_ID_CHARS - 2), "role": "member"} for i in range(MAX_ORGS)]
    token = issuer.mint(user_id, orgs=orgs)
    assert len(token) < MAX_TOKEN_CHARS / 2, len(token)
    response = await me(client, token)
    assert response.status_code == 200, response.text
    assert len(response.json()["orgs"]) == MAX_ORGS


@pytest.mark.parametrize(("case", "orgs"), MALFORMED.items(), ids=MALFORMED.keys())
async def test_a_malformed_orgs_claim_refuses_the_token(client, issuer, user_id, case, orgs):
    assert case in BEYOND_THE_SCHEMA or not ORGS_SCHEMA.is_valid(orgs), "the shared schema refuses it too"
    token = mint_with_orgs(issuer, user_id, orgs)
    for path in ("/me", "/documents", "/history"):
        response = await client.get(path, headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401, (path, response.text)
        error = response.json()["error"]
        assert error["code"] == "unauthorized"
        assert "access token" in error["message"]  # the largest are refused before parsing (MAX_TOKEN_CHARS)


async def test_a_role_raised_in_a_real_token_breaks_its_signature(client, issuer, user_id):
    header, payload, signature = issuer.mint(user_id, orgs=[{"id": "org-1", "role": "member"}]).split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["orgs"] = [{"id": "org-1", "role": "owner"}, {"id": "org-2", "role": "owner"}]
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    assert (await me(client, f"{header}.{forged}.{signature}")).status_code == 401


async def test_a_read_scoped_token_keeps_its_scope_next_to_its_roles(client, auth_headers, issuer, user_id):
    token = issuer.mint(user_id, scope="read", orgs=[{"id": "org-1", "role": "owner"}])
    claims = jwt.decode(token, options={"verify_signature": False})
    user = CurrentUser.from_claims(claims)
    assert user.scope == "read" and user.orgs == {"org-1": OrgRole.OWNER}
    response = await client.post("/embed", json={"text": "x"}, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 403 and response.json()["error"]["code"] == "insufficient_scope"


def test_the_principal_is_immutable():
    user = CurrentUser.from_claims({"sub": "u1", "orgs": [{"id": "org-1", "role": "member"}]})
    assert user.orgs["org-1"] is OrgRole.MEMBER
    with pytest.raises(TypeError):
        user.orgs["org-1"] = OrgRole.OWNER  # type: ignore[index]
    with pytest.raises(TypeError):
        user.orgs["org-2"] = OrgRole.OWNER  # type: ignore[index]
    with pytest.raises(AttributeError):
        user.orgs.clear()  # type: ignore[attr-defined]
    with pytest.raises(Exception, match="cannot assign"):
        user.orgs = {}  # type: ignore[misc]
    assert dict(user.orgs) == {"org-1": "member"}
    assert CurrentUser(id="u2").orgs == {}


@pytest.mark.parametrize("orgs", MALFORMED.values(), ids=MALFORMED.keys())
def test_parse_orgs_refuses_what_the_schema_refuses(orgs):
    with pytest.raises(Unauthorized):
        parse_orgs({"orgs": orgs})


def test_parse_orgs_agrees_with_the_schema_on_valid_claims():
    for orgs in ([], org_list(1, "owner"), org_list(MAX_ORGS, "admin")):
        assert ORGS_SCHEMA.is_valid(orgs)
        assert parse_orgs({"orgs": orgs}) == {o["id"]: OrgRole(o["role"]) for o in orgs}
    assert SCHEMA["properties"]["orgs"]["maxItems"] == MAX_ORGS
    assert SCHEMA["properties"]["orgs"]["items"]["properties"]["role"]["enum"] == [r.value for r in OrgRole]
