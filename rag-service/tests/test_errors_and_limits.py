"""Every error is JSON `{"error": {code, message, request_id}}` with the right status:
unknown routes, wrong methods, validation, oversized bodies, crashes, database outages."""

from __future__ import annotations

import dataclasses
import shutil
import json
import logging

import pytest
from fastapi import APIRouter, Body
from pydantic import BaseModel, Field
from sqlalchemy import text

from rag_service.deps import SessionDep
from rag_service.observability import JsonLogFormatter
from rag_service.storage.db import create_engine_and_sessionmaker


class EchoRequest(BaseModel):
    query: str = Field(min_length=1, max_length=10)
    top_k: int = Field(default=5, ge=1, le=50)


def probe_router() -> APIRouter:
    """Routes that exercise the app's error handling (added to throw-away apps only)."""
    router = APIRouter(prefix="/probe")

    @router.post("/echo")
    async def echo(request: EchoRequest) -> dict:
        return request.model_dump()

    @router.post("/raw")
    async def raw(payload: bytes = Body(media_type="application/octet-stream")) -> dict:
        return {"received": len(payload)}

    @router.get("/crash")
    async def crash() -> dict:
        raise RuntimeError("secret internal detail")

    @router.get("/db")
    async def db(session: SessionDep) -> dict:
        return {"one": (await session.execute(text("SELECT 1"))).scalar()}

    return router


@pytest.fixture
async def probe_client(app_factory, make_settings, runtime):
    settings = make_settings(max_upload_bytes=1000, cors_origins="http://app.test, http://other.test")
    async with app_factory(settings, runtime=runtime) as (app, client):
        app.include_router(probe_router())
        yield client


def assert_error_shape(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    assert error["request_id"] and error["request_id"] == response.headers["X-Request-ID"]
    return error


async def test_unknown_route_is_json_404(client):
    assert_error_shape(await client.get("/no/such/route"), 404, "not_found")


async def test_wrong_method_is_json_405(client):
    assert_error_shape(await client.delete("/health"), 405, "method_not_allowed")


async def test_request_id_is_echoed_when_sane_and_replaced_when_not(client):
    response = await client.get("/no/such/route", headers={"X-Request-ID": "abc-123.X:9"})
    assert response.headers["X-Request-ID"] == "abc-123.X:9"
    assert response.json()["error"]["request_id"] == "abc-123.X:9"
    for insane in ["has space", "x" * 200, "<script>", "a\tb"]:
        response = await client.get("/health", headers={"X-Request-ID": insane})
        assert response.headers["X-Request-ID"] != insane
        assert len(response.headers["X-Request-ID"]) == 32  # uuid4 hex
    one, two = await client.get("/health"), await client.get("/health")
    assert one.headers["X-Request-ID"] != two.headers["X-Request-ID"]


async def test_validation_error_names_field_and_limit_without_echoing_input(probe_client):
    huge = "Q" * 500
    response = await probe_client.post("/probe/echo", json={"query": huge, "top_k": 500})
    error = assert_error_shape(response, 422, "validation_error")
    assert "query" in error["message"] and "10" in error["message"]
    assert "top_k" in error["message"] and "50" in error["message"]
    assert huge not in response.text
    assert {d["field"] for d in error["details"]} == {"query", "top_k"}


async def test_invalid_json_and_wrong_types_are_422(probe_client):
    response = await probe_client.post("/probe/echo", content=b"{not json", headers={"Content-Type": "application/json"})
    assert_error_shape(response, 422, "validation_error")
    response = await probe_client.post("/probe/echo", json={"query": ["a"], "top_k": "many"})
    assert_error_shape(response, 422, "validation_error")
    response = await probe_client.post("/probe/echo", json={"query": "fine"})
    assert response.status_code == 200 and response.json() == {"query": "fine", "top_k": 5}


async def test_oversized_body_is_413_before_reading(probe_client):
    limit = 1000 + 64 * 1024  # max_upload_bytes + the multipart margin
    ok = await probe_client.post("/probe/raw", content=b"x" * 1000, headers={"Content-Type": "application/octet-stream"})
    assert ok.status_code == 200 and ok.json() == {"received": 1000}
    response = await probe_client.post("/probe/raw", content=b"x" * (limit + 1),
                                       headers={"Content-Type": "application/octet-stream"})
    assert_error_shape(response, 413, "payload_too_large")


async def test_oversized_streamed_body_without_length_is_413(probe_client):
    async def chunks():
        for _ in range(100):
            yield b"y" * 1024  # 100 KiB in total, no Content-Length header

    response = await probe_client.post("/probe/raw", content=chunks(), headers={"Content-Type": "application/octet-stream"})
    assert_error_shape(response, 413, "payload_too_large")


async def test_unexpected_exception_is_a_bare_500(probe_client, caplog):
    with caplog.at_level(logging.ERROR):
        response = await probe_client.get("/probe/crash")
    assert_error_shape(response, 500, "internal_error")
    assert "secret" not in response.text and "Traceback" not in response.text


@pytest.mark.parametrize("backend", ["postgres", "sqlite"])
async def test_database_outage_at_request_time_is_503(app_factory, make_settings, runtime, backend, tmp_path):
    if backend == "postgres":
        settings = make_settings(database_url="postgresql://postgres@127.0.0.1:1/nothing")
        engine, sessionmaker = create_engine_and_sessionmaker(settings)
    else:
        settings = make_settings(data_dir=tmp_path / "disk")
        engine, sessionmaker = create_engine_and_sessionmaker(settings)
        shutil.rmtree(tmp_path / "disk")  # the disk holding the database went away
    broken = dataclasses.replace(runtime, settings=settings, engine=engine, sessionmaker=sessionmaker)
    try:
        async with app_factory(settings, runtime=broken) as (app, client):
            app.include_router(probe_router())
            response = await client.get("/probe/db")
    finally:
        await engine.dispose()
    error = assert_error_shape(response, 503, "service_unavailable")
    assert "127.0.0.1" not in error["message"]


async def test_cors_allows_only_configured_origins_with_credentials(probe_client):
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,content-type"}
    allowed = await probe_client.options("/probe/echo", headers={"Origin": "http://app.test", **preflight})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "http://app.test"
    assert allowed.headers["access-control-allow-credentials"] == "true"
    denied = await probe_client.options("/probe/echo", headers={"Origin": "http://evil.test", **preflight})
    assert "access-control-allow-origin" not in denied.headers
    simple = await probe_client.get("/health", headers={"Origin": "http://other.test"})
    assert simple.headers["access-control-allow-origin"] == "http://other.test"
    assert "X-Request-ID" in simple.headers["access-control-expose-headers"]


async def test_access_log_has_request_id_user_route_status_latency(client, auth_headers, user_id, caplog):
    with caplog.at_level(logging.INFO, logger="rag_service.access"):
        response = await client.get("/me", headers={**auth_headers(user_id), "X-Request-ID": "log-test-1"})
    assert response.status_code == 200
    [record] = [r for r in caplog.records if getattr(r, "request_id", None) == "log-test-1"]
    assert record.fields["user_id"] == user_id
    assert record.fields["route"] == "/me"
    assert record.fields["status"] == 200
    assert record.fields["latency_ms"] >= 0
    line = json.loads(JsonLogFormatter().format(record))
    assert line["request_id"] == "log-test-1" and line["user_id"] == user_id and line["status"] == 200
