"""The ingestion budget counts bytes, not requests: /save-document, /documents/upload and
/documents/batch spend the bytes of the documents they carry, all at once per request; a
request that does not fit is a 429 with Retry-After and spends nothing, and so does a
request refused whole (scope, batch limits, unreadable body). Shared across replicas
through Redis."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import pytest

from rag_service.config import Settings
from rag_service.errors import PayloadTooLarge, RateLimited
from rag_service.ratelimit import RateLimiter, seconds_until_room
from services import missing
from test_ratelimit import REDIS_URL, redis_available

# An hour-long window: the test never straddles enough of a window edge to matter.
BUDGET = "1000/hour"


@pytest.fixture
def budget_app(app_factory: Any, make_settings: Any, runtime: Any) -> Any:
    def start(**overrides: Any) -> Any:
        settings = make_settings(rate_limit_ingest_bytes=BUDGET, max_batch_items=3, **overrides)
        # The limiter is part of the runtime: a copy on these settings has its own.
        return app_factory(settings, runtime=dataclasses.replace(runtime, settings=settings))

    return start


def words(count: int, seed: str) -> str:
    """`count` bytes of distinct text (so no two documents are duplicates)."""
    body = (f"{seed} " + " ".join(uuid.uuid4().hex for _ in range(count // 32 + 1)))[:count]
    assert len(body.encode()) == count
    return body


async def stored(client: Any, headers: dict[str, str]) -> int:
    return (await client.get("/documents", headers=headers)).json()["total"]


async def test_requests_spend_their_bytes_and_refusals_spend_nothing(budget_app: Any, auth_headers: Any,
                                                                    user_id: str) -> None:
    headers = auth_headers(user_id)
    async with budget_app() as (_, client):
        # Refused whole before the budget is charged: none of these spends anything.
        too_many = {"items": [{"title": f"T{i}", "content": words(10, "x")} for i in range(4)]}
        assert (await client.post("/documents/batch", json=too_many, headers=headers)).status_code == 413
        assert (await client.post("/documents/batch", content=b"{", headers={
            **headers, "content-type": "application/json"})).status_code == 422
        read_only = auth_headers(user_id, scope="read")
        batch = {"items": [{"title": "Good", "content": words(400, "good")},
                           {"title": "Bad", "content": words(300, "bad"), "metadata": {"a.b": 1}}]}
        assert (await client.post("/documents/batch", json=batch, headers=read_only)).status_code == 403

        # A batch spends the bytes of all its items, a refused item's too: 400 + 300.
        answer = (await client.post("/documents/batch", json=batch, headers=headers)).json()
        assert [item["result"] for item in answer["items"]] == ["created", "error"]
        # A file costs its bytes as sent: 150 more (850).
        upload = await client.post("/documents/upload", files={"files": ("f.txt", words(150, "file").encode())},
                                   headers=headers)
        assert upload.status_code == 201, upload.text

        # 200 bytes do not fit in the 150 left: 429 for the whole request, nothing stored or spent.
        refused = await client.post("/save-document", json={"title": "Late", "content": words(200, "late")},
                                    headers=headers)
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["code"] == "rate_limited" and "200 bytes" in refused.json()["error"]["message"]
        # The byte counter is a sliding window over clock-aligned hours: 200 more bytes fit only
        # after the current hour ends and enough of it slides out, so early in an hour the wait
        # is more than one hour (never more than two).
        assert 1 <= int(refused.headers["Retry-After"]) <= 2 * 3600
        assert await stored(client, headers) == 2

        # Bytes, not characters: 75 two-byte characters are the 150 bytes left, exactly.
        fits = await client.post("/save-document", json={"title": "Last", "content": "é" * 74 + "ü"},
                                 headers=headers)
        assert fits.status_code == 201, fits.text
        full = await client.post("/documents/batch", json={"items": [{"title": "One", "content": "z"}]},
                                 headers=headers)
        assert full.status_code == 429
        # Other users have budgets of their own; searching is not ingestion.
        assert (await client.post("/save-document", json={"title": "T", "content": words(900, "other")},
                                  headers=auth_headers())).status_code == 201
        assert (await client.post("/search", json={"query": "good"}, headers=headers)).status_code == 200


async def test_a_request_larger_than_the_whole_budget_is_413(budget_app: Any, auth_headers: Any) -> None:
    headers = auth_headers()
    async with budget_app(max_batch_bytes=10_000) as (_, client):
        response = await client.post("/documents/batch", headers=headers, json={"items": [
            {"title": "Big", "content": words(1001, "big")}]})
        assert response.status_code == 413, response.text
        assert "RATE_LIMIT_INGEST_BYTES" in response.json()["error"]["message"]
        small = await client.post("/save-document", json={"title": "S", "content": words(1000, "s")}, headers=headers)
        assert small.status_code == 201, "the refused request spent nothing"


async def test_the_default_budget_takes_thousands_of_documents_in_a_minute(make_settings: Any) -> None:
    default = Settings.model_fields["rate_limit_ingest_bytes"].default
    limiter = RateLimiter(make_settings(rate_limit_ingest_bytes=default))
    for _ in range(5_000):  # 5,000 documents of 10 kB: 50 MB, with room to spare
        await limiter.spend_ingest_bytes("loader", 10_000)


async def test_limiter_refuses_what_does_not_fit_and_spends_nothing(make_settings: Any) -> None:
    limiter = RateLimiter(make_settings(rate_limit_ingest_bytes=BUDGET))
    await limiter.spend_ingest_bytes("u", 700)
    with pytest.raises(RateLimited) as refused:
        await limiter.spend_ingest_bytes("u", 301)
    # A sliding window over clock-aligned hours: early in an hour the wait passes one hour
    # (never two; test_retry_after_is_when_the_cost_fits checks the exact figure).
    assert refused.value.status_code == 429 and 1 <= int(refused.value.headers["Retry-After"]) <= 2 * 3600
    await limiter.spend_ingest_bytes("u", 300)  # the refusal spent nothing: exactly 300 were left
    with pytest.raises(PayloadTooLarge):
        await limiter.spend_ingest_bytes("v", 1001)
    await RateLimiter(make_settings(rate_limit_ingest_bytes=BUDGET, rate_limit_enabled=False)).spend_ingest_bytes(
        "u", 10**9)


async def test_replicas_share_the_byte_budget_through_redis(make_settings: Any) -> None:
    if not redis_available():
        missing("no Redis on 127.0.0.1:6379 (start it with scripts/ensure-services.sh)")
    settings = make_settings(rate_limit_ingest_bytes=BUDGET, redis_url=REDIS_URL)
    replica_a, replica_b = RateLimiter(settings), RateLimiter(settings)
    user = f"shared-{uuid.uuid4().hex}"
    await replica_a.spend_ingest_bytes(user, 600)
    with pytest.raises(RateLimited):
        await replica_b.spend_ingest_bytes(user, 401)
    await replica_b.spend_ingest_bytes(user, 400)
    with pytest.raises(RateLimited):
        await replica_a.spend_ingest_bytes(user, 1)


async def test_an_unreachable_redis_lets_ingestion_through(make_settings: Any) -> None:
    limiter = RateLimiter(make_settings(redis_url="redis://127.0.0.1:1/0", rate_limit_ingest_bytes=BUDGET))
    for _ in range(3):
        await limiter.spend_ingest_bytes("someone", 900)  # no exception: fails open (and logs)


@pytest.mark.parametrize(("window", "cost", "expected"), [
    ((0, 0.0, 0, 0.0), 1000, 0.0),              # nothing spent: fits now
    ((1000, 30.0, 0, 0.0), 500, 0.0),           # half the previous window still counts: 500 left
    ((1000, 30.0, 200, 90.0), 500, 12.0),       # in 12 s the previous window weighs 300
    ((0, 0.0, 800, 90.0), 500, 52.5),           # 30 s until the window ends, then 22.5 s of sliding
    ((0, 0.0, 1000, 61.0), 1000, 61.0),         # all of it: once the full window has slid out
])
def test_retry_after_is_when_the_cost_fits(window: tuple[int, float, int, float], cost: int,
                                           expected: float) -> None:
    assert seconds_until_room(window, 1000, 60, cost) == pytest.approx(expected)
