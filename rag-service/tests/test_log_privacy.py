"""Logs never carry user content: a hostile session on real Postgres, every logger at DEBUG.

Every title, document text, file name, metadata value, search query and chat question sent
carries a unique marker; some are built to fail inside the database or its driver (unpaired
surrogates, over-long values, NUL bytes). Afterwards no log record, rendered the way the
service writes it (JSON, with exception text and stack), may contain any marker.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

import pytest

from rag_service.observability import JsonLogFormatter

pytestmark = pytest.mark.postgres


class Markers:
    def __init__(self) -> None:
        self.sent: list[str] = []

    def __call__(self) -> str:
        marker = f"MARK{uuid.uuid4().hex}"
        self.sent.append(marker)
        return marker


def rendered(records: list[logging.LogRecord]) -> list[str]:
    formatter = JsonLogFormatter()
    return [formatter.format(record) + repr(record.args) for record in records]


async def hostile_session(client: Any, headers: dict[str, str], mark: Markers, issuer: Any) -> list[tuple[int, str, int]]:
    statuses = []

    async def send(method: str, path: str, **kwargs: Any) -> Any:
        request_headers = dict(headers)
        if "json" in kwargs:  # ASCII-escaped, so unpaired surrogates travel as \ud800
            kwargs["content"] = json.dumps(kwargs.pop("json"))
            request_headers["Content-Type"] = "application/json"
        response = await client.request(method, path, headers=request_headers, **kwargs)
        statuses.append((len(statuses), path, response.status_code))
        return response

    # Ordinary use: content must not be logged even when everything works.
    saved = await send("POST", "/save-document", json={
        "title": f"Title {mark()}", "content": f"Body text {mark()}. " * 30, "metadata": {"tag": mark()}})
    document_id = saved.json().get("document_id")
    await send("POST", "/documents/upload", files=[("files", (f"{mark()}.txt", f"Upload {mark()}".encode(), "text/plain"))],
               data={"title": f"Upload title {mark()}"})
    await send("POST", "/search", json={"query": f"find {mark()}", "filters": {"metadata": {"tag": [mark()]}}})
    await send("POST", "/embed", json={"text": f"embed {mark()}"})
    first = await send("POST", "/chat", json={"query": f"What is {mark()}?"})
    conversation_id = first.json().get("conversation_id")
    await send("POST", "/chat", json={"query": f"And {mark()}?", "conversation_id": conversation_id})
    await send("POST", "/chat", json={"query": f"Again {mark()}?", "stream": True})
    await send("GET", "/history")
    await send("GET", "/documents")

    # Values that fail in the driver or the database: unpaired surrogates cannot be encoded
    # as UTF-8, NUL cannot be stored in text, some values exceed column sizes.
    surrogate = "\ud800"
    await send("POST", "/save-document", json={"title": f"T{surrogate}{mark()}", "content": f"C {mark()} " * 20})
    await send("POST", "/save-document", json={"title": f"T {mark()}", "content": f"C{surrogate} {mark()} " * 20})
    await send("POST", "/save-document", json={"title": f"T {mark()}", "content": f"meta {mark()} " * 20,
                                               "metadata": {"k": f"{surrogate}{mark()}", f"x{surrogate}": mark()}})
    await send("POST", "/save-document", json={"title": f"T {mark()}", "content": f"nul {mark()} " * 20,
                                               "metadata": {"k": f"\x00{mark()}"}})
    await send("POST", "/save-document", json={"title": f"{mark()}" + "t" * 5000, "content": f"long {mark()}"})
    await send("POST", "/search", json={"query": f"{surrogate}{mark()}"})
    await send("POST", "/search", json={"query": f"{mark()} " * 2000})
    await send("POST", "/embed", json={"text": f"{surrogate}{mark()}"})
    await send("POST", "/chat", json={"query": f"{surrogate} {mark()}"})
    await send("POST", "/chat", json={"query": f"\x00 {mark()}"})
    await send("POST", "/chat", json={"query": f"q {mark()}", "conversation_id": f"{surrogate}{mark()}"[:60]})
    await send("POST", "/chat", json={"query": f"q {mark()}", "history_context": [
        {"role": "user", "content": f"\x00{mark()}"}, {"role": "assistant", "content": f"{surrogate}{mark()}"}]})
    await send("POST", "/chat", json={"query": f"q {mark()}", "conversation_id": conversation_id,
                                      "filters": {"metadata": {f"k{surrogate}": [mark()]}}})
    await send("POST", "/documents/upload", files=[("files", (f"{mark()}\x00.txt", f"x {mark()}".encode(), "text/plain"))])
    await send("POST", "/documents/upload", files=[("files", ("bad.txt", f"{mark()}".encode() + b"\xff\xfe\x00", "text/plain"))])
    long_subject = {"Authorization": f"Bearer {issuer.mint('u' * 300)}"}  # owner columns hold 255
    response = await client.post("/save-document", headers=long_subject,
                                 json={"title": f"T {mark()}", "content": f"long owner {mark()}"})
    statuses.append((len(statuses), "/save-document (300-char sub)", response.status_code))
    if document_id:
        await send("DELETE", f"/documents/{document_id}")
    return statuses


async def injected_failures(app: Any, client: Any, mark: Markers) -> list[int]:
    """Errors no request should be able to cause, injected through test-only routes: the
    database quoting a value in its message, and an unexpected exception carrying one."""
    from sqlalchemy import text

    database_marker, exception_marker = mark(), mark()

    async def database_error() -> None:
        async with app.state.runtime.sessionmaker() as session:
            # invalid input syntax for type integer: "MARK..." (the value is in the message)
            await session.execute(text("SELECT CAST(:value AS integer)"), {"value": database_marker})

    async def unexpected_error() -> None:
        raise ValueError(f"something about {exception_marker}")

    app.add_api_route("/database-error-for-test", database_error)
    app.add_api_route("/unexpected-error-for-test", unexpected_error)
    return [(await client.get("/database-error-for-test")).status_code,
            (await client.get("/unexpected-error-for-test")).status_code]


async def test_a_hostile_session_leaves_no_user_content_in_the_logs(
    caplog, make_settings, app_factory, postgres_url, issuer
):
    mark = Markers()
    settings = make_settings(database_url=postgres_url, log_level="DEBUG")
    caplog.set_level(logging.DEBUG)  # every logger: ours, httpx, the model's...
    caplog.set_level(logging.DEBUG, logger="sqlalchemy")  # ...and SQLAlchemy's (WARN by default)
    async with app_factory(settings) as (app, client):
        headers = {"Authorization": f"Bearer {issuer.mint(f'user-{uuid.uuid4().hex[:8]}')}"}
        statuses = await hostile_session(client, headers, mark, issuer)
        injected = await injected_failures(app, client, mark)
    assert injected == [500, 500]
    assert any("sqlstate=22P02" in record.getMessage() for record in caplog.records), \
        "database errors are logged by type and SQLSTATE"
    assert len(mark.sent) >= 40
    assert caplog.records, "the capture must see the service's logs"
    assert any(record.name.startswith("sqlalchemy.engine") for record in caplog.records), \
        "SQL statements are logged at this level: the check covers them"
    leaks = [line for line in rendered(caplog.records) if any(m in line for m in mark.sent)]
    assert not leaks, f"{len(leaks)} log records carry user content, e.g. {leaks[0][:600]}"
    assert {path: status for _, path, status in statuses}["/save-document (300-char sub)"] == 401
    server_errors = [entry for entry in statuses if entry[2] >= 500]
    assert not server_errors, (server_errors, statuses)
