"""What the API port shows besides the API: metrics only with their token, API docs off in
production, private-response headers, no `server` header, bounded request headers.

The last two are properties of the HTTP server, so they are checked on a real `rag serve`
process; the rest in-process over ASGI.
"""

from __future__ import annotations

import socket
import uuid

import httpx
import pytest

from serve_support import free_port, start_serve, stop, wait_healthy

EXPECTED_HEADERS = {
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}
DOC_ROUTES = ("/docs", "/redoc", "/openapi.json")


def assert_private(response: httpx.Response) -> None:
    for name, value in EXPECTED_HEADERS.items():
        assert response.headers.get(name) == value, (response.request.url, name, dict(response.headers))


async def test_metrics_are_not_public(client):
    """Without METRICS_TOKEN there is no /metrics route at all."""
    response = await client.get("/metrics")
    assert response.status_code == 404
    assert "http_requests_total" not in response.text


async def test_metrics_need_their_bearer_token(make_settings, app_factory, issuer):
    token = uuid.uuid4().hex
    async with app_factory(make_settings(metrics_token=token)) as (_app, client):
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": token},
                        {"Authorization": f"Bearer {issuer.mint('user-1')}"}):
            response = await client.get("/metrics", headers=headers)
            assert response.status_code == 401, headers
            assert response.json()["error"]["code"] == "unauthorized"
            assert "http_requests_total" not in response.text
        response = await client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200
        assert "http_requests_total" in response.text


@pytest.mark.parametrize(("overrides", "docs_on"), [
    ({}, True),
    ({"rag_env": "production"}, False),
    ({"rag_env": "production", "api_docs_enabled": True}, True),
    ({"api_docs_enabled": False}, False),
])
async def test_api_docs_switch(make_settings, app_factory, overrides, docs_on):
    async with app_factory(make_settings(**overrides)) as (_app, client):
        for route in DOC_ROUTES:
            response = await client.get(route)
            assert response.status_code == (200 if docs_on else 404), route
        assert (await client.get("/health")).status_code == 200


async def test_every_kind_of_response_is_marked_private(client, auth_headers, make_settings, app_factory):
    headers = auth_headers()
    responses = [
        await client.get("/health"),
        await client.get("/documents", headers=headers),
        await client.get("/documents"),  # 401
        await client.get("/no/such/route"),  # 404
        await client.post("/search", headers=headers, json={"query": ""}),  # 422
        await client.post("/chat", headers=headers, json={"query": "anything?", "stream": True}),  # SSE
    ]
    assert [r.status_code for r in responses] == [200, 200, 401, 404, 422, 200]
    for response in responses:
        assert_private(response)

    # A 500 is answered by the outermost handler, outside every middleware.
    async with app_factory(make_settings()) as (app, fresh_client):
        async def boom() -> None:
            raise RuntimeError("boom")

        app.add_api_route("/boom-for-test", boom)
        response = await fresh_client.get("/boom-for-test")
        assert response.status_code == 500
        assert_private(response)


# --- a real server process ----------------------------------------------------------------


@pytest.fixture(scope="module")
def served(issuer, tmp_path_factory):
    port = free_port()
    # Production refuses to start without the account events feed's token (config.py).
    process = start_serve(tmp_path_factory.mktemp("served"), port, issuer.jwks_url, RAG_ENV="production",
                          ACCOUNT_EVENTS_TOKEN=issuer.events_token, AUTH_EVENTS_URL=issuer.events_url)
    try:
        first = wait_healthy(process, port)
        assert first.get("status") == 200, first
        yield f"http://127.0.0.1:{port}", port
    finally:
        stop([process])


def raw_request(port: int, header_value_bytes: int) -> bytes:
    """GET /health with one header of the given size over a raw socket; what came back
    (b"" if the server closed or reset the connection without answering)."""
    head = (f"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            f"X-Padding: {'a' * header_value_bytes}\r\n\r\n").encode()
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        try:
            sock.sendall(head)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused mid-send: read whatever the server answered before closing
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except (ConnectionResetError, socket.timeout):
            pass
    return received


def test_server_sends_no_server_header_and_private_headers(served):
    base, _port = served
    response = httpx.get(f"{base}/health")
    assert response.status_code == 200
    assert "server" not in response.headers
    assert_private(response)
    for route in DOC_ROUTES:  # RAG_ENV=production
        assert httpx.get(f"{base}{route}").status_code == 404


def test_oversized_request_headers_are_refused(served):
    _base, port = served
    assert raw_request(port, 8 * 1024).startswith(b"HTTP/1.1 200")  # a big but sane header
    answer = raw_request(port, 1024 * 1024)
    status_line = answer.split(b"\r\n", 1)[0]
    assert status_line in (b"", b"HTTP/1.1 400 Bad Request", b"HTTP/1.1 431 Request Header Fields Too Large"), \
        status_line
    assert not status_line.startswith(b"HTTP/1.1 2")
    # The server is still there for everyone else.
    assert raw_request(port, 10).startswith(b"HTTP/1.1 200")
