"""Per-user rate limits: two separate budgets, 429 + Retry-After, keyed by the JWT subject,
in memory or in Redis, and off when disabled."""

from __future__ import annotations

import dataclasses
import uuid

import pytest
from fastapi import APIRouter

from rag_service.deps import CheapRateLimit, CostlyRateLimit
from rag_service.ratelimit import RateLimiter
from services import missing

REDIS_URL = "redis://127.0.0.1:6379/15"


def limited_router() -> APIRouter:
    router = APIRouter(prefix="/limited")

    @router.get("/cheap", dependencies=[CheapRateLimit])
    async def cheap() -> dict:
        return {"ok": True}

    @router.post("/costly", dependencies=[CostlyRateLimit])
    async def costly() -> dict:
        return {"ok": True}

    return router


@pytest.fixture
def limited_app(app_factory, make_settings, runtime):
    async def start(**overrides):
        settings = make_settings(rate_limit_cheap="5/minute", rate_limit_costly="3/minute", **overrides)
        # The limiter is part of the runtime: a copy on these settings has its own.
        return app_factory(settings, runtime=dataclasses.replace(runtime, settings=settings))

    return start


def redis_available() -> bool:
    try:
        import redis

        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping())
    except Exception:
        return False


@pytest.mark.parametrize("store", ["memory", "redis"])
async def test_costly_budget_runs_out_with_retry_after_and_cheap_budget_is_separate(
        limited_app, auth_headers, store):
    overrides = {}
    if store == "redis":
        if not redis_available():
            missing("no Redis on 127.0.0.1:6379 (start it with scripts/ensure-services.sh)")
        overrides["redis_url"] = REDIS_URL
    alice, bob = auth_headers(f"alice-{uuid.uuid4().hex}"), auth_headers(f"bob-{uuid.uuid4().hex}")
    async with await limited_app(**overrides) as (app, client):
        app.include_router(limited_router())
        for _ in range(3):
            assert (await client.post("/limited/costly", headers=alice)).status_code == 200
        refused = await client.post("/limited/costly", headers=alice)
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        # Another user has a budget of their own.
        assert (await client.post("/limited/costly", headers=bob)).status_code == 200
        # The cheap budget is separate from the costly one.
        for _ in range(5):
            assert (await client.get("/limited/cheap", headers=alice)).status_code == 200
        assert (await client.get("/limited/cheap", headers=alice)).status_code == 429


async def test_rate_limited_routes_still_require_a_valid_token(limited_app, issuer):
    async with await limited_app() as (app, client):
        app.include_router(limited_router())
        assert (await client.post("/limited/costly")).status_code == 401
        forged = issuer.mint("x", iss="http://evil.test")
        assert (await client.post("/limited/costly", headers={"Authorization": f"Bearer {forged}"})).status_code == 401


async def test_disabled_rate_limit_never_refuses(limited_app, auth_headers):
    headers = auth_headers()
    async with await limited_app(rate_limit_enabled=False) as (app, client):
        app.include_router(limited_router())
        for _ in range(10):
            assert (await client.post("/limited/costly", headers=headers)).status_code == 200


async def test_unreachable_redis_lets_requests_through(make_settings):
    limiter = RateLimiter(make_settings(redis_url="redis://127.0.0.1:1/0", rate_limit_costly="1/minute"))
    for _ in range(3):
        await limiter.hit("costly", "someone")  # no exception: fails open (and logs)


async def test_same_limit_strings_still_give_separate_budgets(make_settings):
    limiter = RateLimiter(make_settings(rate_limit_cheap="2/minute", rate_limit_costly="2/minute"))
    for _ in range(2):
        await limiter.hit("costly", "u")
    await limiter.hit("cheap", "u")
    await limiter.hit("cheap", "u")
    with pytest.raises(Exception) as caught:
        await limiter.hit("cheap", "u")
    assert caught.value.status_code == 429 and "Retry-After" in caught.value.headers
