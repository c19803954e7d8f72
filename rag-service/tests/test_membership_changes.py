"""Membership changes (auth/membership_changes.py): a token with organizations minted before its
user's latest membership change is refused with 401 `token_stale`; fresh tokens, tokens without
organizations and other users' tokens are untouched. The auth-service's list comes over real HTTP
from the stand-in issuer (fixtures_issuer.py), as the auth-service answers it."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import uuid
from typing import Any

import httpx
import pytest

from fixtures_issuer import JwksIssuer
from rag_service.auth.membership_changes import (
    SINCE_OVERLAP_MS,
    MembershipChanges,
    MembershipChangesPoller,
    membership_changes_url,
    subject_hash,
)

ORGS = [{"id": "org-research", "role": "member"}]


def new_user() -> str:
    return f"user-{uuid.uuid4().hex[:12]}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def private_app(app_factory: Any, runtime: Any, isolated_issuer: JwksIssuer) -> Any:
    """The session runtime with membership state of its own, fed from `isolated_issuer`'s list
    by a poller the test drives (tokens still come from the shared `issuer`'s keys)."""
    changes = MembershipChanges()
    poller = MembershipChangesPoller(isolated_issuer.membership_changes_url, changes, interval=0.05, timeout=2)
    async with app_factory(runtime.settings, runtime=dataclasses.replace(runtime, membership_changes=changes)) as (_, client):
        yield client, poller
    await poller.aclose()


async def status_of(client: httpx.AsyncClient, token: str, path: str = "/me") -> tuple[int, Any]:
    response = await client.get(path, headers=bearer(token))
    return response.status_code, response.json()


async def test_a_token_minted_before_a_membership_change_is_refused_as_stale(
        private_app: Any, issuer: JwksIssuer, isolated_issuer: JwksIssuer) -> None:
    client, poller = private_app
    carol, dave = new_user(), new_user()
    now = int(time.time())
    before = issuer.mint(carol, orgs=ORGS, iat=now - 30)
    before_without_orgs = issuer.mint(carol, iat=now - 30)
    daves = issuer.mint(dave, orgs=ORGS, iat=now - 30)
    changed_at = isolated_issuer.record_change(carol, at=now - 10.5)
    assert (await status_of(client, before))[0] == 200, "not known yet: accepted"

    assert await poller.poll_once()
    for path in ("/me", "/documents", "/history"):
        status, body = await status_of(client, before, path)
        assert status == 401, (path, body)
        assert body["error"]["code"] == "token_stale"
        assert body["error"]["message"] == "memberships changed: mint a new token"
    assert (await client.get("/me", headers=bearer(before))).headers["www-authenticate"] == "Bearer"
    # What the auth-service mints after the change: iat at or after changed_at.
    assert (await status_of(client, issuer.mint(carol, orgs=ORGS, iat=changed_at)))[0] == 200
    assert (await status_of(client, issuer.mint(carol, orgs=ORGS, iat=changed_at - 1)))[0] == 401
    assert (await status_of(client, before_without_orgs))[0] == 200, "no organizations: nothing to take back"
    assert (await status_of(client, daves))[0] == 200, "other users are untouched"


async def test_the_running_app_polls_the_auth_service_and_refuses_within_the_interval(
        client: httpx.AsyncClient, issuer: JwksIssuer, settings: Any) -> None:
    """The session app's own poller (started by its lifespan, every 5 s by default)."""
    erin = new_user()
    old = issuer.mint(erin, orgs=ORGS, iat=int(time.time()) - 5)
    assert (await status_of(client, old))[0] == 200
    issuer.record_change(erin)
    started = time.monotonic()
    while (await status_of(client, old))[0] == 200:
        assert time.monotonic() - started < settings.membership_changes_poll_seconds + 3, "never refused"
        await asyncio.sleep(0.2)
    assert (await status_of(client, old))[1]["error"]["code"] == "token_stale"
    assert (await status_of(client, issuer.mint(erin, orgs=ORGS, iat=int(time.time()) + 1)))[0] == 200


async def test_a_truncated_answer_refuses_every_older_token_with_organizations(
        private_app: Any, issuer: JwksIssuer, isolated_issuer: JwksIssuer) -> None:
    client, poller = private_app
    now = int(time.time())
    listed = [{"subject": subject_hash(new_user()), "changed_at": now - 20 + i} for i in range(3)]
    isolated_issuer.membership_answer = {"changes": listed[::-1], "now": now * 1000, "retention_seconds": 960,
                                         "truncated": True}
    assert await poller.poll_once()
    # A change left out of the answer is older than the oldest listed: every older token goes.
    assert (await status_of(client, issuer.mint(new_user(), orgs=ORGS, iat=now - 21)))[0] == 401
    assert (await status_of(client, issuer.mint(new_user(), orgs=ORGS, iat=now - 20)))[0] == 200
    assert (await status_of(client, issuer.mint(new_user(), iat=now - 21)))[0] == 200, "no organizations"


async def test_the_auth_service_unreachable_keeps_what_is_known(
        private_app: Any, issuer: JwksIssuer, isolated_issuer: JwksIssuer, caplog: pytest.LogCaptureFixture) -> None:
    client, poller = private_app
    frank = new_user()
    old = issuer.mint(frank, orgs=ORGS, iat=int(time.time()) - 30)
    isolated_issuer.record_change(frank, at=time.time() - 10)
    assert await poller.poll_once()
    isolated_issuer.stop()
    caplog.set_level(logging.INFO, logger="rag_service.auth.membership_changes")
    assert not await poller.poll_once()
    assert not await poller.poll_once()
    assert (await status_of(client, old))[0] == 401, "the last state stands"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, "one warning per outage, not one per poll"
    assert frank not in caplog.text and subject_hash(frank) not in caplog.text
    isolated_issuer.start()
    poller.url = isolated_issuer.membership_changes_url  # a new port
    assert await poller.poll_once()
    assert "answers again" in caplog.text
    assert (await status_of(client, old))[0] == 401


@pytest.mark.parametrize("answer", [
    500, 404, [], {"changes": {}, "now": 1, "retention_seconds": 960, "truncated": False},
    {"changes": [], "now": "1", "retention_seconds": 960, "truncated": False},
    {"changes": [], "now": 1, "retention_seconds": 0, "truncated": False},
    {"changes": [], "now": 1, "retention_seconds": 960, "truncated": "no"},
    {"changes": [{"subject": "carol", "changed_at": 1}], "now": 1, "retention_seconds": 960, "truncated": False},
    {"changes": [{"subject": "a" * 64, "changed_at": 1.5}], "now": 1, "retention_seconds": 960, "truncated": False},
    {"changes": [{"subject": "a" * 64, "changed_at": True}], "now": 1, "retention_seconds": 960, "truncated": False},
], ids=lambda a: str(a)[:40])
async def test_an_answer_that_does_not_parse_changes_nothing(
        private_app: Any, issuer: JwksIssuer, isolated_issuer: JwksIssuer, answer: Any) -> None:
    client, poller = private_app
    grace = new_user()
    old = issuer.mint(grace, orgs=ORGS, iat=int(time.time()) - 30)
    isolated_issuer.record_change(grace, at=time.time() - 10)
    assert await poller.poll_once()
    isolated_issuer.membership_answer = answer
    assert not await poller.poll_once()
    assert len(poller.changes) == 1
    assert (await status_of(client, old))[0] == 401
    assert (await status_of(client, issuer.mint(new_user(), orgs=ORGS, iat=int(time.time()) - 30)))[0] == 200


async def test_polls_ask_since_the_last_answer_with_a_margin(isolated_issuer: JwksIssuer) -> None:
    poller = MembershipChangesPoller(isolated_issuer.membership_changes_url, MembershipChanges(), interval=1, timeout=2)
    try:
        assert await poller.poll_once()
        assert await poller.poll_once()
    finally:
        await poller.aclose()
    first, second = isolated_issuer.membership_requests
    assert first is None, "the first poll asks for everything still listed"
    assert second is not None and second % SINCE_OVERLAP_MS == 0
    assert SINCE_OVERLAP_MS <= time.time() * 1000 - second <= 2 * SINCE_OVERLAP_MS + 5000


def test_entries_are_forgotten_after_the_retention_on_the_auth_services_clock() -> None:
    changes = MembershipChanges()
    old, recent = new_user(), new_user()
    now = 2_000_000_000
    changes.apply({"changes": [(subject_hash(recent), now - 100), (subject_hash(old), now - 900)],
                   "now": now * 1000, "retention_seconds": 960, "truncated": False})
    assert changes.minted_before_change(old, now - 1000) and changes.minted_before_change(recent, now - 101)
    changes.apply({"changes": [], "now": (now + 100) * 1000, "retention_seconds": 960, "truncated": False})
    assert not changes.minted_before_change(old, now - 1000), "every token minted before it has expired"
    assert changes.minted_before_change(recent, now - 101)
    assert len(changes) == 1
    # The latest change of a subject wins; an older one listed later does not move it back.
    changes.apply({"changes": [(subject_hash(recent), now - 500)], "now": (now + 100) * 1000,
                   "retention_seconds": 960, "truncated": False})
    assert changes.minted_before_change(recent, now - 101)


async def test_the_lifespan_polls_at_the_interval_and_zero_disables_it(
        app_factory: Any, make_settings: Any, isolated_issuer: JwksIssuer) -> None:
    url = isolated_issuer.membership_changes_url
    async with app_factory(make_settings(membership_changes_poll_seconds=0.1, auth_membership_changes_url=url)):
        await asyncio.sleep(0.5)
    polled = len(isolated_issuer.membership_requests)
    assert polled >= 3
    async with app_factory(make_settings(membership_changes_poll_seconds=0, auth_membership_changes_url=url)):
        await asyncio.sleep(0.3)
    assert len(isolated_issuer.membership_requests) == polled


def test_the_url_sits_beside_the_jwks_unless_set(make_settings: Any) -> None:
    settings = make_settings(auth_jwks_url="https://auth.example.com/base/api/auth/jwks")
    assert membership_changes_url(settings) == "https://auth.example.com/base/api/auth/membership-changes"
    settings = make_settings(auth_membership_changes_url="https://auth.example.com/auth/membership-changes")
    assert membership_changes_url(settings) == "https://auth.example.com/auth/membership-changes"
