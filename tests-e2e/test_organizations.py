"""Organizations across the real services: a user in two organizations gets both, with their
roles, in the access JWT (from a session and from an API key) and the rag-service reads them;
once removed from one, the user's next token lacks it, and within seconds the rag-service
refuses the tokens minted before the removal (401 `token_stale`)."""

from __future__ import annotations

import base64
import json
import re
import time
import uuid
from pathlib import Path

import httpx
import jwt
from jsonschema import Draft202012Validator

from conftest import sign_up
from stack import Service

SCHEMA = Draft202012Validator(json.loads(
    (Path(__file__).resolve().parent.parent / "shared-schemas" / "jwt-claims.schema.json").read_text()))


class Member:
    """A signed-up user calling Better Auth's organization routes with their session token."""

    def __init__(self, auth_url: str) -> None:
        self.auth_url = auth_url
        self.email = f"org-{uuid.uuid4().hex[:10]}@example.com"
        self.session = sign_up(auth_url, email=self.email)["session_token"]

    def org(self, method: str, route: str, **kwargs: object) -> dict:
        response = httpx.request(method, f"{self.auth_url}/api/auth/organization/{route}", timeout=30,
                                 headers={"Authorization": f"Bearer {self.session}"}, **kwargs)
        assert response.status_code == 200, (route, response.text)
        return response.json()

    def create(self, name: str) -> str:
        return self.org("POST", "create", json={"name": name, "slug": f"{name.lower()}-{uuid.uuid4().hex[:8]}"})["id"]

    def invite(self, organization_id: str, email: str, role: str) -> str:
        return self.org("POST", "invite-member", json={"organizationId": organization_id, "email": email, "role": role})["id"]

    def token(self) -> str:
        response = httpx.post(f"{self.auth_url}/auth/token", headers={"Authorization": f"Bearer {self.session}"}, timeout=30)
        assert response.status_code == 200, response.text
        return response.json()["access_token"]


def orgs_in(token: str) -> dict[str, str]:
    claims = jwt.decode(token, options={"verify_signature": False})
    assert not list(SCHEMA.iter_errors(claims)), list(SCHEMA.iter_errors(claims))
    return {org["id"]: org["role"] for org in claims.get("orgs", [])}


def orgs_seen_by_rag(rag_url: str, token: str) -> dict[str, str]:
    response = httpx.get(f"{rag_url}/me", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert response.status_code == 200, response.text
    return {org["id"]: org["role"] for org in response.json()["orgs"]}


def delivered_invitation(auth: Service, email: str) -> str:
    """The invitation id as development delivers it: a mail in the auth-service's outbox, read
    through the development mailbox, whose link ends in `#invitation=<id>`."""
    deadline = time.monotonic() + 20
    while True:  # delivery is queued: the mail lands shortly after the invitation is answered
        listed = httpx.get(f"{auth.url}/dev/mailbox", headers={"Accept": "application/json"}, timeout=10)
        assert listed.status_code == 200, listed.text
        mails = [m for m in listed.json()["mails"] if m["to"] == email and "invited" in m["subject"]]
        if mails or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert len(mails) == 1, listed.json()
    mail = httpx.get(f"{auth.url}/dev/mailbox/{mails[0]['id']}", headers={"Accept": "application/json"}, timeout=10).json()
    ids = re.findall(r"#invitation=(\w+)", mail["text"])
    assert len(ids) == 1, mail["text"]
    return ids[0]


def test_two_organizations_reach_the_rag_service_and_a_removal_shows_in_the_next_token(
        stack: dict[str, Service], auth_url: str, rag_url: str) -> None:
    alice, bob, carol = Member(auth_url), Member(auth_url), Member(auth_url)
    research, ops = alice.create("Research"), bob.create("Ops")
    alice.invite(research, carol.email, "member")
    carol.org("POST", "accept-invitation", json={"invitationId": delivered_invitation(stack["auth"], carol.email)})
    carol.org("POST", "accept-invitation", json={"invitationId": bob.invite(ops, carol.email, "admin")})
    assert carol.email not in stack["auth"].log(), "the auth-service log names nobody"

    before = carol.token()
    assert orgs_in(before) == {research: "member", ops: "admin"}
    assert orgs_seen_by_rag(rag_url, before) == {research: "member", ops: "admin"}
    assert orgs_seen_by_rag(rag_url, alice.token()) == {research: "owner"}

    key = httpx.post(f"{auth_url}/auth/api-keys", json={"name": "reader", "scope": "read"}, timeout=30,
                     headers={"Authorization": f"Bearer {carol.session}"}).json()["key"]
    exchanged = httpx.post(f"{auth_url}/auth/token", headers={"x-api-key": key}, timeout=30).json()["access_token"]
    assert jwt.decode(exchanged, options={"verify_signature": False})["scope"] == "read"
    assert orgs_seen_by_rag(rag_url, exchanged) == {research: "member", ops: "admin"}

    alice.org("POST", "remove-member", json={"organizationId": research, "memberIdOrEmail": carol.email})
    after = carol.token()  # the same session: not revoked, but its next token is read afresh
    assert orgs_in(after) == {ops: "admin"}
    assert orgs_seen_by_rag(rag_url, after) == {ops: "admin"}
    exchanged = httpx.post(f"{auth_url}/auth/token", headers={"x-api-key": key}, timeout=30).json()["access_token"]
    assert orgs_seen_by_rag(rag_url, exchanged) == {ops: "admin"}


def test_a_removed_members_old_token_is_refused_within_seconds(
        stack: dict[str, Service], auth_url: str, rag_url: str) -> None:
    """The rag-service reads the auth-service's account events feed every 5 s (its default)."""
    admin, member = Member(auth_url), Member(auth_url)
    team, own = admin.create("Team"), member.create("Own")
    member.org("POST", "accept-invitation", json={"invitationId": admin.invite(team, member.email, "member")})
    old, admins_old = member.token(), admin.token()
    assert orgs_seen_by_rag(rag_url, old) == {team: "member", own: "owner"}

    admin.org("POST", "remove-member", json={"organizationId": team, "memberIdOrEmail": member.email})
    removed = time.monotonic()
    while (response := httpx.get(f"{rag_url}/me", headers={"Authorization": f"Bearer {old}"}, timeout=10)).status_code == 200:
        assert time.monotonic() - removed < 5 + 3, "the old token still works past the poll interval"
        time.sleep(0.25)
    assert response.status_code == 401, response.text
    assert response.json()["error"]["code"] == "token_stale"

    new = member.token()  # minted after the removal, maybe in the same second: never stale
    assert orgs_in(new) == {own: "owner"}
    assert orgs_seen_by_rag(rag_url, new) == {own: "owner"}
    assert orgs_seen_by_rag(rag_url, admins_old) == {team: "owner"}, "other members are untouched"


def test_a_forged_organization_claim_is_refused(auth_url: str, rag_url: str) -> None:
    mallory = Member(auth_url)
    header, payload, signature = mallory.token().split(".")
    claims = jwt.decode(f"{header}.{payload}.{signature}", options={"verify_signature": False})
    claims["orgs"] = [{"id": "someone-elses-org", "role": "owner"}]
    forged_payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    response = httpx.get(f"{rag_url}/me", headers={"Authorization": f"Bearer {header}.{forged_payload}.{signature}"})
    assert response.status_code == 401, response.text
