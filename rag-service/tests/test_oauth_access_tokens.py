"""OAuth access tokens (the auth-service as an OAuth authorization server for MCP clients): the
audience is one of this service's resource identifiers (PUBLIC_URL, PUBLIC_URL/mcp), the scope a
space-separated list of which only `read` and `write` count. Tries the audiences and scopes that
must not pass. Real HTTP JWKS server, real Ed25519 keys; the e2e suite runs the real flow
(tests-e2e/test_mcp_oauth.py)."""

from __future__ import annotations

from typing import Any

import pytest

from fixtures_issuer import JwksIssuer
from rag_service.auth.tokens import CurrentUser
from rag_service.errors import Unauthorized

PUBLIC_URL = "https://rag.example.com"


def oauth_token(issuer: JwksIssuer, aud: Any, scope: Any) -> str:
    """What the auth-service's OAuth provider mints: `at+jwt`, client ids, no session audience."""
    return issuer.mint("u1", aud=aud, scope=scope, client_id="client-1", azp="client-1",
                       headers={"typ": "at+jwt"})


@pytest.mark.parametrize("aud", [PUBLIC_URL + "/mcp", PUBLIC_URL, [PUBLIC_URL + "/mcp", "http://auth.test/api/auth/oauth2/userinfo"]])
async def test_a_token_for_this_resource_is_accepted(make_verifier, isolated_issuer, aud):
    verifier = make_verifier(isolated_issuer, public_url=PUBLIC_URL + "/")
    user = CurrentUser.from_claims(await verifier.verify(oauth_token(isolated_issuer, aud, "openid read offline_access")))
    assert (user.id, user.scope) == ("u1", "read")


@pytest.mark.parametrize("aud", ["https://other.example.com/mcp", "https://rag.example.com/mcp/", "https://rag.example.com.evil/mcp",
                                 "http://rag.example.com/mcp", ["https://other.example.com"]])
async def test_a_token_for_another_resource_is_refused(make_verifier, isolated_issuer, aud):
    verifier = make_verifier(isolated_issuer, public_url=PUBLIC_URL)
    with pytest.raises(Unauthorized) as caught:
        await verifier.verify(oauth_token(isolated_issuer, aud, "read write"))
    assert "audience" in caught.value.message.lower()


async def test_without_public_url_no_resource_audience_is_accepted(make_verifier, isolated_issuer):
    verifier = make_verifier(isolated_issuer, public_url=None)
    with pytest.raises(Unauthorized):
        await verifier.verify(oauth_token(isolated_issuer, PUBLIC_URL + "/mcp", "read write"))
    # The session audience keeps working.
    assert (await verifier.verify(isolated_issuer.mint("u1")))["sub"] == "u1"


@pytest.mark.parametrize(("scope", "expected"), [
    ("read write", "write"), ("write", "write"), ("offline_access write openid", "write"),
    ("read", "read"), ("openid profile email read", "read"),
])
async def test_the_strongest_rag_scope_granted_is_the_callers(make_verifier, isolated_issuer, scope, expected):
    verifier = make_verifier(isolated_issuer, public_url=PUBLIC_URL)
    claims = await verifier.verify(oauth_token(isolated_issuer, PUBLIC_URL + "/mcp", scope))
    assert CurrentUser.from_claims(claims).scope == expected


@pytest.mark.parametrize("scope", ["openid offline_access", "profile email", "", "READ", "read,write", " ", ["read"]])
async def test_a_scope_granting_neither_read_nor_write_is_refused(make_verifier, isolated_issuer, scope):
    verifier = make_verifier(isolated_issuer, public_url=PUBLIC_URL)
    with pytest.raises(Unauthorized) as caught:
        await verifier.verify(oauth_token(isolated_issuer, PUBLIC_URL + "/mcp", scope))
    assert "scope" in caught.value.message
