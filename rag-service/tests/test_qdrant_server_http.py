"""The Qdrant server adapter against qdrant-client's real HTTP requests (no Qdrant server
runs here). qdrant-client 1.20 speaks REST through httpx, so respx answers its requests
at httpx's transport: what the adapter sends (paths, the api-key header) and how it maps
what comes back (timeouts, 5xx, 429, a refused key, a missing collection, unreadable
bodies) to the API's errors, with retries only where repeating a request is harmless."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import httpx
import pytest
import respx
from qdrant_client import AsyncQdrantClient

from rag_service.errors import ServiceUnavailable
from rag_service.core.retry import RetryPolicy
from rag_service.storage.factory import build_vector_store
from rag_service.config import Settings
from rag_service.storage.qdrant_server import ServerVectorStore
from vector_store_support import A1_KERNEL, ALICE, DIM, query, unit
from rag_service.storage.access import Access, access_filter

URL = "https://qdrant.invalid:6333"
API_KEY = "qdrant-key-0123456789-not-for-logs"
COLLECTION = "chunks"
BASE = f"/collections/{COLLECTION}"
FAST = RetryPolicy(max_retries=2, base_delay=0.001, max_delay=0.005)
ATTEMPTS = 1 + FAST.max_retries

pytestmark = pytest.mark.filterwarnings("ignore:Failed to obtain server version")


def ok(result: Any) -> httpx.Response:
    return httpx.Response(200, json={"result": result, "status": "ok", "time": 0.001})


DONE = {"operation_id": 1, "status": "completed"}
HIT = {"id": A1_KERNEL.id, "version": 1, "score": 0.5, "payload": A1_KERNEL.payload()}


def qdrant_error(status: int, message: str, **headers: str) -> httpx.Response:
    return httpx.Response(status, json={"status": {"error": message}, "time": 0.0}, headers=headers)


REFUSED_KEY = qdrant_error(401, "Invalid api-key")
NO_COLLECTION = qdrant_error(404, f"Not found: Collection `{COLLECTION}` doesn't exist!")


def store(retry_policy: RetryPolicy = FAST) -> ServerVectorStore:
    client = AsyncQdrantClient(url=URL, api_key=API_KEY, timeout=2, check_compatibility=False)
    return ServerVectorStore(client, collection=COLLECTION, dimension=DIM, retry_policy=retry_policy)


@pytest.fixture
def qdrant():
    """respx in front of httpx: every request to URL must be answered by a route."""
    with respx.mock(base_url=URL, assert_all_called=False) as router:
        yield router


@pytest.fixture
async def vectors():
    server = store()
    yield server
    await server.close()


# What each adapter operation sends, and the route that answers it.
OPERATIONS = {
    "search": (lambda s: s.search(query("kernel", unit(1)), access_filter(Access(ALICE)), limit=3),
               "POST", f"{BASE}/points/query", ok({"points": [HIT]})),
    "count": (lambda s: s.count(access_filter(Access(ALICE))), "POST", f"{BASE}/points/count", ok({"count": 1})),
    "upsert": (lambda s: s.upsert([A1_KERNEL]), "PUT", f"{BASE}/points", ok(DONE)),
    "delete": (lambda s: s.delete(access_filter(Access(ALICE))), "POST", f"{BASE}/points/delete", ok(DONE)),
}


def answer_collection_setup(qdrant: respx.Router, *, exists: bool = True) -> dict[str, respx.Route]:
    return {
        "exists": qdrant.get(f"{BASE}/exists").mock(return_value=ok({"exists": exists})),
        "create": qdrant.put(BASE).mock(return_value=ok(True)),
        "index": qdrant.put(f"{BASE}/index").mock(return_value=ok(DONE)),
    }


async def test_every_request_carries_the_api_key(qdrant, vectors):
    routes = answer_collection_setup(qdrant, exists=False)
    for name, (_, method, path, response) in OPERATIONS.items():
        routes[name] = qdrant.route(method=method, path=path).mock(return_value=response)
    await vectors.ensure_collection()
    for name, (operation, *_) in OPERATIONS.items():
        await operation(vectors)
    [hit] = await vectors.search(query("kernel", unit(1)), access_filter(Access(ALICE)), limit=3)
    assert (hit.id, hit.document_id, hit.text) == (A1_KERNEL.id, "doc-a1", A1_KERNEL.text)
    assert {name: route.call_count for name, route in routes.items()} == {
        "exists": 1, "create": 1, "index": 3, "search": 2, "count": 1, "upsert": 1, "delete": 1}
    requests = [call.request for call in qdrant.calls]
    assert all(request.headers["api-key"] == API_KEY for request in requests)
    assert all(request.url.scheme == "https" for request in requests)


async def test_the_factory_passes_the_configured_key(qdrant, tmp_path):
    qdrant.get("/").mock(return_value=httpx.Response(200, json={"title": "qdrant", "version": "1.15.0"}))
    route = qdrant.post(f"{BASE}__all-minilm-l6-v2__{DIM}/points/count").mock(return_value=ok({"count": 0}))
    settings = Settings(_env_file=None, data_dir=tmp_path, qdrant_url=URL, qdrant_api_key=API_KEY)
    server = build_vector_store(settings, "all-MiniLM-L6-v2", DIM)
    try:
        assert await server.count(access_filter(Access(ALICE))) == 0
    finally:
        await server.close()
    assert route.calls.last.request.headers["api-key"] == API_KEY


@pytest.mark.parametrize("name", OPERATIONS)
@pytest.mark.parametrize("failure", [httpx.ReadTimeout, httpx.ConnectTimeout, httpx.ConnectError,
                                     httpx.RemoteProtocolError, qdrant_error(500, "boom"), qdrant_error(503, "busy")],
                         ids=["read timeout", "connect timeout", "refused", "dropped", "500", "503"])
async def test_transient_failures_are_retried_then_503(qdrant, vectors, name, failure):
    """Every data operation is harmless to repeat, so each transient failure is retried,
    a bounded number of times."""
    operation, method, path, _ = OPERATIONS[name]
    route = qdrant.route(method=method, path=path).mock(side_effect=failure) if isinstance(failure, type) \
        else qdrant.route(method=method, path=path).mock(return_value=failure)
    with pytest.raises(ServiceUnavailable) as raised:
        await operation(vectors)
    assert route.call_count == ATTEMPTS
    assert (raised.value.status_code, raised.value.code) == (503, "service_unavailable")
    assert raised.value.message.startswith("the vector database ")


@pytest.mark.parametrize("name", OPERATIONS)
async def test_a_failure_then_success_succeeds(qdrant, vectors, name):
    operation, method, path, response = OPERATIONS[name]
    route = qdrant.route(method=method, path=path).mock(side_effect=[httpx.ReadTimeout, qdrant_error(502, "proxy"),
                                                                     response])
    await operation(vectors)
    assert route.call_count == 3


async def test_creating_the_collection_is_retried_only_when_it_was_never_sent(qdrant, vectors):
    """A repeated create answers 409 instead of doing the same again: after a read timeout
    or a 5xx (did it happen?) the adapter does not resend it; after a refused connection or
    a 429 (it did not happen) it does."""
    routes = answer_collection_setup(qdrant, exists=False)
    for unknown_outcome in (httpx.ReadTimeout, qdrant_error(500, "boom")):
        routes["create"].mock(side_effect=[unknown_outcome, ok(True)])
        routes["create"].reset()
        with pytest.raises(ServiceUnavailable):
            await vectors.ensure_collection()
        assert routes["create"].call_count == 1
    routes["create"].mock(side_effect=[httpx.ConnectError, qdrant_error(429, "slow down", **{"Retry-After": "0"}),
                                       ok(True)])
    routes["create"].reset()
    await vectors.ensure_collection()
    assert routes["create"].call_count == 3
    # Another replica created it meanwhile: 409 is success.
    routes["create"].mock(return_value=qdrant_error(409, f"Collection `{COLLECTION}` already exists!"))
    await vectors.ensure_collection()


async def test_rate_limited_to_the_end_is_503_with_retry_after(qdrant, vectors):
    route = qdrant.post(f"{BASE}/points/count").mock(return_value=qdrant_error(429, "slow down", **{"Retry-After": "7"}))
    with pytest.raises(ServiceUnavailable) as raised:
        await vectors.count(access_filter(Access(ALICE)))
    assert route.call_count == ATTEMPTS
    assert raised.value.headers == {"Retry-After": "7"}


@pytest.mark.parametrize("status", [401, 403])
@pytest.mark.parametrize("name", OPERATIONS)
async def test_a_refused_api_key_is_a_configuration_error_without_the_key(qdrant, vectors, name, status):
    operation, method, path, _ = OPERATIONS[name]
    route = qdrant.route(method=method, path=path).mock(return_value=qdrant_error(status, "Invalid api-key"))
    with pytest.raises(ServiceUnavailable) as raised:
        await operation(vectors)
    assert route.call_count == 1  # retrying cannot fix a key
    assert raised.value.code == "vector_store_misconfigured"
    assert "QDRANT_API_KEY" in raised.value.message and API_KEY not in raised.value.message


async def test_a_collection_deleted_during_start_up_is_created_again(qdrant, vectors):
    routes = answer_collection_setup(qdrant)
    routes["exists"].mock(side_effect=[ok({"exists": True}), ok({"exists": False})])
    routes["index"].mock(side_effect=[NO_COLLECTION, ok(DONE), ok(DONE), ok(DONE)])
    await vectors.ensure_collection()
    assert (routes["create"].call_count, routes["index"].call_count) == (1, 4)


async def test_a_missing_collection_is_a_clear_503(qdrant, vectors):
    routes = answer_collection_setup(qdrant)
    routes["index"].mock(return_value=NO_COLLECTION)  # deleted again each time: give up
    with pytest.raises(ServiceUnavailable) as raised:
        await vectors.ensure_collection()
    assert raised.value.code == "vector_collection_missing" and routes["index"].call_count == 2
    qdrant.post(f"{BASE}/points/query").mock(return_value=NO_COLLECTION)
    with pytest.raises(ServiceUnavailable) as raised:
        await vectors.search(query("kernel", unit(1)), access_filter(Access(ALICE)), limit=3)
    assert raised.value.code == "vector_collection_missing"
    assert COLLECTION in raised.value.message
    # A 404 that is not about the collection: QDRANT_URL points somewhere else.
    qdrant.post(f"{BASE}/points/count").mock(return_value=httpx.Response(404, text="no route"))
    with pytest.raises(ServiceUnavailable) as raised:
        await vectors.count(access_filter(Access(ALICE)))
    assert raised.value.code == "vector_store_misconfigured" and "QDRANT_URL" in raised.value.message


@pytest.mark.parametrize("body", [
    httpx.Response(200, text="<html>gateway says hi</html>"),
    httpx.Response(200, json={"result": {"points": "many"}}),
    httpx.Response(200, json={"result": None, "status": "ok"}),
    ok({"points": [{"id": A1_KERNEL.id, "version": 1, "score": 0.5, "payload": {"unexpected": True}}]}),
], ids=["not json", "wrong shape", "no result", "not our payload"])
async def test_an_unreadable_body_is_503_and_not_retried(qdrant, vectors, body):
    route = qdrant.post(f"{BASE}/points/query").mock(return_value=body)
    with pytest.raises(ServiceUnavailable) as raised:
        await vectors.search(query("kernel", unit(1)), access_filter(Access(ALICE)), limit=3, mode="dense")
    assert raised.value.code == "vector_store_bad_response"
    assert route.call_count == 1


async def test_other_client_errors_are_bugs_not_outages(qdrant, vectors):
    qdrant.post(f"{BASE}/points/count").mock(return_value=qdrant_error(400, "Bad request: wrong filter"))
    with pytest.raises(Exception) as raised:
        await vectors.count(access_filter(Access(ALICE)))
    assert not isinstance(raised.value, ServiceUnavailable)


async def test_health_is_false_on_any_failure_and_never_raises(qdrant, vectors):
    route = qdrant.get(f"{BASE}/exists")
    for failure in (REFUSED_KEY, qdrant_error(500, "boom"), httpx.Response(200, text="?")):
        route.mock(return_value=failure)
        assert await vectors.healthy() is False
    route.mock(side_effect=httpx.ReadTimeout)
    assert await vectors.healthy() is False
    route.mock(return_value=ok({"exists": True}))
    assert await vectors.healthy() is True


async def test_a_refused_key_reaches_the_api_as_503_json_and_never_the_logs(
    app_factory, make_settings, runtime, auth_headers, caplog
):
    settings = make_settings(qdrant_url=URL, qdrant_api_key=API_KEY, log_level="DEBUG")
    server = store()
    broken = dataclasses.replace(runtime, settings=settings, vector_store=server)
    caplog.set_level(logging.DEBUG)
    try:
        async with app_factory(settings, runtime=broken) as (_, client):
            with respx.mock(assert_all_called=False) as mocked:
                mocked.route(host="127.0.0.1").pass_through()  # the JWKS issuer stays real
                mocked.route(host="qdrant.invalid").mock(return_value=REFUSED_KEY)
                response = await client.post("/search", json={"query": "bread"}, headers=auth_headers())
                health = await client.get("/health")
    finally:
        await server.close()
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "vector_store_misconfigured" and "QDRANT_API_KEY" in error["message"]
    assert health.status_code == 503 and health.json()["services"]["qdrant"] is False
    assert API_KEY not in response.text
    assert caplog.records and not [r for r in caplog.records if API_KEY in r.getMessage()]
