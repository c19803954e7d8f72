"""Token staleness from the account events feed (auth/membership_changes.py, fed by
accounts/consumer.py's StalenessFollower): a token with organizations minted before its
user's latest membership change (removal, role change) or before one of its organizations
was deleted is refused with 401 `token_stale`; any token of a deleted account minted before
the deletion with 401 `account_deleted`. Fresh tokens, tokens without organizations and other
users' tokens are untouched. The feed comes over real HTTP from the stand-in issuer
(fixtures_issuer.py), as the auth-service serves it."""

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
from rag_service.accounts.consumer import StalenessFollower, poll_periodically
from rag_service.accounts.feed import FeedClient, FeedRefused, FeedUnavailable, events_url
from rag_service.auth.membership_changes import MembershipChanges

ORG = "org-research"
ORGS = [{"id": ORG, "role": "member"}]
MAX_AGE = 960


def new_user() -> str:
    return f"user-{uuid.uuid4().hex[:12]}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def feed_of(issuer: JwksIssuer) -> FeedClient:
    return FeedClient(issuer.events_url, issuer.events_token, timeout=2)


@pytest.fixture
async def private_app(app_factory: Any, runtime: Any, isolated_issuer: JwksIssuer) -> Any:
    """The session runtime with staleness state of its own, fed from `isolated_issuer`'s feed
    by a follower the test drives (tokens still come from the shared `issuer`'s keys)."""
    changes = MembershipChanges()
    follower = StalenessFollower(feed_of(isolated_issuer), changes, max_age_seconds=MAX_AGE)
    async with app_factory(runtime.settings, runtime=dataclasses.replace(runtime, membership_changes=changes)) as (_, client):
        yield client, follower
    await follower.feed.aclose()


async def status_of(client: httpx.AsyncClient, token: str, path: str = "/me") -> tuple[int, Any]:
    response = await client.get(path, headers=bearer(token))
    return response.status_code, response.json()


async def test_a_token_minted_before_a_membership_change_is_refused_as_stale(
        private_app: Any, issuer: JwksIssuer, isolated_issuer: JwksIssuer) -> None:
    client, follower = private_app
    carol, dave = new_user(), new_user()
    now = int(time.time())
    before = issuer.mint(carol, orgs=ORGS, iat=now - 30)
    before_without_orgs = issuer.mint(carol, iat=now - 30)
    daves = issuer.mint(dave, orgs=ORGS, iat=now - 30)
    event = isolated_issuer.emit("member.removed", user_id=carol, organization_id=ORG, at=now - 10.5)
    changed_at = -(-event["occurred_at"] // 1000)
    assert (await status_of(client, before))[0] == 200, "not known yet: accepted"

    assert await follower.step() == 1
    for path in ("/me", "/documents", "/history"):
        status, body = await status_of(client, before, path)
        assert status == 401, (path, body)
        assert body["error"]["code"] == "token_stale"
        assert body["error"]["message"] == "memberships changed: mint a new token"
    assert (await client.get("/me", headers=bearer(before))).headers["www-authenticate"] == "Bearer"
    # What the auth-service mints after the change: iat at or after ceil(occurred_at).
    assert (await status_of(client, issuer.mint(carol, orgs=ORGS, iat=changed_at)))[0] == 200
    assert (await status_of(client, issuer.mint(carol, orgs=ORGS, iat=changed_at - 1)))[0] == 401
    assert (await status_of(client, before_without_orgs))[0] == 200, "no organizations: nothing to take back"
    assert (await status_of(client, daves))[0] == 200, "other users are untouched"


async def test_a_role_change_an_organization_deletion_and_an_account_deletion(
        private_app: Any, issuer: JwksIssuer, isolated_issuer: JwksIssuer) -> None:
    client, follower = private_app
    erin, frank, gina, other_org_member = new_user(), new_user(), new_user(), new_user()
    now = int(time.time())
    gone_org = f"org-{uuid.uuid4().hex[:8]}"
    erins = issuer.mint(erin, orgs=[{"id": ORG, "role": "admin"}], iat=now - 30)
    franks = issuer.mint(frank, orgs=[{"id": gone_org, "role": "owner"}, *ORGS], iat=now - 30)
    members_elsewhere = issuer.mint(other_org_member, orgs=ORGS, iat=now - 30)
    ginas, ginas_plain = issuer.mint(gina, orgs=ORGS, iat=now - 30), issuer.mint(gina, iat=now - 30)
    isolated_issuer.emit("member.role_changed", user_id=erin, organization_id=ORG, role="member", at=now - 5)
    isolated_issuer.emit("organization.deleted", organization_id=gone_org, at=now - 5)
    isolated_issuer.emit("user.deleted", user_id=gina, at=now - 5)
    assert await follower.step() == 3

    assert (await status_of(client, erins))[1]["error"]["code"] == "token_stale"
    assert (await status_of(client, franks))[1]["error"]["code"] == "token_stale", "carries the deleted organization"
    assert (await status_of(client, members_elsewhere))[0] == 200
    for token in (ginas, ginas_plain):
        status, body = await status_of(client, token)
        assert status == 401 and body["error"]["code"] == "account_deleted", body
    assert (await status_of(client, issuer.mint(frank, orgs=ORGS, iat=now - 4)))[0] == 200


async def test_a_replica_knows_recent_changes_right_after_start_and_nothing_older(
        isolated_issuer: JwksIssuer) -> None:
    """The first read asks `since = now - max age`: changes that may concern a live token."""
    recent, ancient = new_user(), new_user()
    now = time.time()
    isolated_issuer.emit("member.removed", user_id=ancient, organization_id=ORG, at=now - MAX_AGE - 60)
    isolated_issuer.emit("member.removed", user_id=recent, organization_id=ORG, at=now - 60)
    changes = MembershipChanges()
    follower = StalenessFollower(feed_of(isolated_issuer), changes, max_age_seconds=MAX_AGE, clock=lambda: now)
    try:
        assert await follower.step() == 1
        assert isolated_issuer.events_requests[0]["since"] == str(int((now - MAX_AGE) * 1000))
        assert changes.refusal(recent, now - 61, [ORG]) == "token_stale"
        assert changes.refusal(ancient, now - MAX_AGE - 120, [ORG]) is None
        # Then it follows the cursor: one more event, one more request with `after`.
        isolated_issuer.emit("member.removed", user_id=ancient, organization_id=ORG, at=now)
        assert await follower.step() == 1
        assert isolated_issuer.events_requests[-1]["after"] == isolated_issuer.events[1]["cursor"]
        assert await follower.step() == 0
    finally:
        await follower.feed.aclose()


async def test_an_expired_cursor_restarts_from_the_window_and_pages_are_followed(isolated_issuer: JwksIssuer) -> None:
    users = [new_user() for _ in range(5)]
    now = time.time()
    changes = MembershipChanges()
    feed = FeedClient(isolated_issuer.events_url, isolated_issuer.events_token, timeout=2)
    follower = StalenessFollower(feed, changes, max_age_seconds=MAX_AGE, clock=lambda: now)
    try:
        assert await follower.step() == 0
        for user in users:
            isolated_issuer.emit("member.removed", user_id=user, organization_id=ORG, at=now - 1)
        isolated_issuer.prune(keep_last=2)  # the follower's cursor is older than what is kept: 410
        assert await follower.step() == 2
        assert [r.get("after") is not None for r in isolated_issuer.events_requests[1:]] == [True, False]
        assert [changes.refusal(u, now - 2, [ORG]) for u in users] == [None, None, None, "token_stale", "token_stale"]
    finally:
        await feed.aclose()


async def test_the_feed_unreachable_or_unusable_keeps_what_is_known(
        private_app: Any, issuer: JwksIssuer, isolated_issuer: JwksIssuer) -> None:
    client, follower = private_app
    hal = new_user()
    old = issuer.mint(hal, orgs=ORGS, iat=int(time.time()) - 30)
    isolated_issuer.emit("member.removed", user_id=hal, organization_id=ORG, at=time.time() - 10)
    assert await follower.step() == 1
    for answer in (500, {"events": {}, "next_cursor": "x", "has_more": False, "retention_seconds": 1},
                   {"events": [{"cursor": "1:1", "type": "user.renamed", "user_id": "u", "occurred_at": 1}],
                    "next_cursor": "1:1", "has_more": False, "retention_seconds": 1},
                   {"events": [{"cursor": "1:1", "type": "member.removed", "user_id": "u", "occurred_at": 1}],
                    "next_cursor": "1:1", "has_more": False, "retention_seconds": 1}):
        isolated_issuer.events_answer = answer
        with pytest.raises(FeedUnavailable):
            await follower.step()
    isolated_issuer.events_answer = None
    isolated_issuer.stop()
    with pytest.raises(FeedUnavailable):
        await follower.step()
    assert (await status_of(client, old))[0] == 401, "the last state stands"
    assert len(follower.changes) == 1


async def test_a_wrong_token_is_refused_by_the_feed_and_logged_once(
        isolated_issuer: JwksIssuer, caplog: pytest.LogCaptureFixture) -> None:
    wrong = FeedClient(isolated_issuer.events_url, "x" * 40, timeout=2)
    follower = StalenessFollower(wrong, MembershipChanges(), max_age_seconds=MAX_AGE)
    try:
        with pytest.raises(FeedRefused):
            await follower.step()
        assert isolated_issuer.events_requests[-1]["authorization"] == "Bearer " + "x" * 40
        caplog.set_level(logging.INFO, logger="rag_service.accounts.consumer")
        steps = 0
        stop = asyncio.Event()

        async def counted() -> None:
            nonlocal steps
            steps += 1
            if steps == 3:
                stop.set()
            await follower.step()

        task = asyncio.create_task(poll_periodically("staleness", counted, 0))
        await stop.wait()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1, "one error per outage, not one per poll"
        assert "ACCOUNT_EVENTS_TOKEN" in errors[0].getMessage()
        assert isolated_issuer.events_token not in caplog.text
    finally:
        await wrong.aclose()


async def test_the_running_app_follows_the_feed_and_refuses_within_the_interval(
        client: httpx.AsyncClient, issuer: JwksIssuer, settings: Any) -> None:
    """The session app's own follower (started by its lifespan, every 5 s by default)."""
    ivy = new_user()
    old = issuer.mint(ivy, orgs=ORGS, iat=int(time.time()) - 5)
    assert (await status_of(client, old))[0] == 200
    issuer.emit("member.removed", user_id=ivy, organization_id=ORG)
    started = time.monotonic()
    while (await status_of(client, old))[0] == 200:
        assert time.monotonic() - started < settings.account_events_poll_seconds + 3, "never refused"
        await asyncio.sleep(0.2)
    assert (await status_of(client, old))[1]["error"]["code"] == "token_stale"
    assert (await status_of(client, issuer.mint(ivy, orgs=ORGS, iat=int(time.time()) + 1)))[0] == 200


def test_entries_are_forgotten_after_the_longest_token_lifetime() -> None:
    changes = MembershipChanges()
    old, recent = new_user(), new_user()
    now = 2_000_000_000
    changes.member_changed(recent, (now - 100) * 1000)
    changes.member_changed(old, (now - 900) * 1000)
    assert changes.refusal(old, now - 1000, [ORG]) and changes.refusal(recent, now - 101, [ORG])
    changes.forget_before(now + 100 - MAX_AGE)
    assert changes.refusal(old, now - 1000, [ORG]) is None, "every token minted before it has expired"
    assert changes.refusal(recent, now - 101, [ORG]) == "token_stale"
    assert len(changes) == 1
    # The latest change of a user wins; an older one read later does not move it back.
    changes.member_changed(recent, (now - 500) * 1000)
    assert changes.refusal(recent, now - 101, [ORG]) == "token_stale"


async def test_without_a_token_the_lifespan_warns_and_does_not_poll(
        app_factory: Any, make_settings: Any, isolated_issuer: JwksIssuer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="rag_service.accounts.consumer")
    async with app_factory(make_settings(account_events_token=None, auth_events_url=isolated_issuer.events_url)):
        pass
    assert isolated_issuer.events_requests == []
    assert "ACCOUNT_EVENTS_TOKEN is not set" in caplog.text
    async with app_factory(make_settings(account_events_poll_seconds=0, auth_events_url=isolated_issuer.events_url,
                                         account_events_token=isolated_issuer.events_token)):
        pass
    assert isolated_issuer.events_requests == []


def test_production_refuses_to_start_without_the_token_and_short_tokens_are_refused(make_settings: Any) -> None:
    with pytest.raises(ValueError, match="ACCOUNT_EVENTS_TOKEN"):
        make_settings(rag_env="production", account_events_token=None)
    with pytest.raises(ValueError, match="at least 32"):
        make_settings(account_events_token="short")
    assert make_settings(rag_env="production").account_events_token


def test_the_url_is_the_documented_route_beside_the_jwks_unless_set(make_settings: Any) -> None:
    settings = make_settings(auth_jwks_url="https://auth.example.com/base/api/auth/jwks", auth_events_url=None)
    assert events_url(settings) == "https://auth.example.com/base/auth/events"
    settings = make_settings(auth_events_url="https://auth.example.com/api/auth/events")
    assert events_url(settings) == "https://auth.example.com/api/auth/events"
