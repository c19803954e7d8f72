"""Two auth-service and two rag-service processes on one Postgres + pgvector (issue 13).

Both auth processes share one database (and so one signing key set) and one issuer; both rag
processes share one pgvector database (documents and vectors), each with its own DATA_DIR.
Several users sign up through either auth process and upload, search and chat through both
rag replicas while one replica is killed with SIGKILL in the middle of an ingestion and
restarted. Afterwards: no 5xx anywhere (transport errors only on the killed replica), every
acknowledged document is `ready` with as many vectors as chunks, the killed ingestion was
repaired, no user saw another's document, and every token works on every replica.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from conftest import ARTIFACTS, _test_postgres, missing, sign_up
from stack import Service, start_auth, start_rag

USERS = 8
DEADLINE_SECONDS = 180.0
TOPICS = ["volcano", "glacier", "orchard", "lighthouse", "harbor", "meadow", "canyon", "library",
          "comet", "reef"]


@pytest.fixture(scope="module")
def pgvector_database() -> Iterator[str]:
    """A fresh database on the pgvector server (TEST_PGVECTOR_URL), dropped at the end."""
    import psycopg

    admin_url = os.environ.get(_test_postgres().PGVECTOR_ENV)
    if not admin_url:
        missing("TEST_PGVECTOR_URL is not set (run through scripts/test_postgres.py run -- ...)")
    name = f"e2e_replicas_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{admin_url.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def document_text(topic: str, owner: str, paragraphs: int) -> str:
    """Plain text of many distinct paragraphs (several chunks); unique per owner."""
    return "\n\n".join(
        f"Paragraph {i} about the {topic} written for {owner}. The {topic} notes number {i} describe "
        f"its shape, its history and the people who visit the {topic} every season, item {i * 7}."
        for i in range(paragraphs))


class Recorder:
    """Every HTTP exchange with a rag replica: (replica, status) or (replica, transport error)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.statuses: list[tuple[str, int, str]] = []
        self.transport_errors: list[tuple[str, str]] = []

    def call(self, replica: str, method: str, url: str, **kwargs: object) -> httpx.Response | None:
        try:
            response = httpx.request(method, url, timeout=120, **kwargs)  # type: ignore[arg-type]
        except httpx.TransportError as error:
            with self.lock:
                self.transport_errors.append((replica, f"{method} {url}: {error!r}"))
            return None
        with self.lock:
            self.statuses.append((replica, response.status_code, f"{method} {url}: {response.text[:300]}"))
        return response


def vector_counts(database_url: str) -> dict[str, int]:
    """Rows per document in the pgvector table(s) (the table is named after the model)."""
    import psycopg

    with psycopg.connect(database_url) as conn:
        tables = [row[0] for row in conn.execute(
            "SELECT table_name FROM information_schema.columns WHERE table_schema = 'public' "
            "AND column_name = 'dense'")]
        counts: dict[str, int] = {}
        for table in tables:
            for document_id, count in conn.execute(
                    f'SELECT document_id, count(*) FROM "{table}" GROUP BY document_id'):
                counts[document_id] = counts.get(document_id, 0) + count
        return counts


def document_rows(database_url: str) -> dict[str, tuple[str, str, int, str]]:
    """id -> (user_id, status, chunk_count, title) for every document row."""
    import psycopg

    with psycopg.connect(database_url) as conn:
        return {row[0]: (row[1], row[2], row[3], row[4]) for row in conn.execute(
            "SELECT id, user_id, status, chunk_count, title FROM documents")}


def victim_generation(database_url: str, title: str) -> int:
    import psycopg

    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT generation FROM documents WHERE title = %s", (title,)).fetchone()
        assert row is not None
        return row[0]


def wait_for(condition: Callable[[], bool], what: str, deadline_seconds: float = DEADLINE_SECONDS) -> None:
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {deadline_seconds}s waiting for {what}")


def test_two_replicas_of_each_service_survive_a_killed_ingestion(
        tmp_path: Path, make_postgres_database: Callable[[], str], pgvector_database: str) -> None:
    auth_database = make_postgres_database()
    issuer = "http://auth.replicas.test"
    shared_auth = {"DATABASE_URL": auth_database, "BETTER_AUTH_SECRET": uuid.uuid4().hex * 2,
                   "JWT_ISSUER": issuer}
    rag_env = {"VECTOR_STORE": "pgvector", "DATABASE_URL": pgvector_database, "AUTH_ISSUER": issuer,
               "INGEST_CLAIM_LEASE_SECONDS": "5", "INGEST_REPAIR_INTERVAL_SECONDS": "1",
               "INGEST_BATCH_SIZE": "8", "RATE_LIMIT_CHEAP": "100000/minute",
               "RATE_LIMIT_COSTLY": "100000/minute"}
    logs = ARTIFACTS / f"replicas-{uuid.uuid4().hex[:8]}"
    services: list[Service] = []
    try:
        # One after the other: the first start of each service migrates the shared database.
        auths = [start_auth(tmp_path / f"auth{i}", logs, name=f"auth{i}", **shared_auth) for i in range(2)]
        services += auths
        rags: dict[str, Service] = {}
        for i, name in enumerate(["rag-a", "rag-b"]):
            rags[name] = start_rag(tmp_path / name, logs, auths[i].url, name=name,
                                   AUTH_JWKS_URL=f"{auths[i].url}/api/auth/jwks", **rag_env)
            services.append(rags[name])
        urls = {name: service.url for name, service in rags.items()}
        recorder = Recorder()

        users = [sign_up(auths[i % 2].url) for i in range(USERS)]
        headers = [{"Authorization": f"Bearer {u['access_token']}"} for u in users]
        acknowledged: dict[str, str] = {}  # document_id -> owner user id
        seen: list[tuple[str, str]] = []  # (user id, document id) returned by search/list/chat

        def workload(i: int) -> None:
            user_id = users[i]["user"]["id"]
            for n, replica in enumerate(["rag-a", "rag-b"]):
                topic = TOPICS[(i + n) % len(TOPICS)]
                text = document_text(topic, user_id, paragraphs=12)
                response = recorder.call(replica, "POST", f"{urls[replica]}/documents/upload", headers=headers[i],
                                         files={"files": (f"{topic}.txt", text.encode(), "text/plain")})
                if response is not None and response.status_code == 201:
                    for document in response.json()["documents"]:
                        acknowledged[document["document_id"]] = user_id
            for replica in ["rag-a", "rag-b"]:
                topic = TOPICS[i % len(TOPICS)]
                for method, path, body in [("POST", "/search", {"query": f"the {topic} history"}),
                                           ("POST", "/chat", {"query": f"What about the {topic}?"}),
                                           ("GET", "/documents", None)]:
                    response = recorder.call(replica, method, f"{urls[replica]}{path}", headers=headers[i],
                                             **({"json": body} if body else {}))
                    if response is not None and response.status_code == 200:
                        payload = response.json()
                        items = payload.get("results") or payload.get("sources") or payload.get("documents") or []
                        seen.extend((user_id, item.get("document_id") or item["id"]) for item in items)

        # The ingestion to kill: a long document on rag-b, killed once its row is committed.
        victim_title = f"victim-{uuid.uuid4().hex[:8]}"
        victim_text = document_text("observatory", users[0]["user"]["id"], paragraphs=1500)

        def victim_upload() -> httpx.Response | None:
            return recorder.call("rag-b", "POST", f"{urls['rag-b']}/documents/upload", headers=headers[0],
                          data={"title": victim_title},
                          files={"files": ("observatory.txt", victim_text.encode(), "text/plain")})

        with ThreadPoolExecutor(max_workers=USERS + 1) as pool:
            victim = pool.submit(victim_upload)
            wait_for(lambda: any(row[3] == victim_title for row in document_rows(pgvector_database).values()),
                     "the victim document's row", 60)
            workers = [pool.submit(workload, i) for i in range(USERS)]
            os.killpg(rags["rag-b"].process.pid, signal.SIGKILL)
            rags["rag-b"].process.wait(timeout=10)
            # The kill came mid-ingestion: the upload was never acknowledged.
            assert victim.result(timeout=30) is None
            # Back on the same data dir and database (a new port, as after a reschedule).
            rags["rag-b"] = start_rag(tmp_path / "rag-b", logs, auths[1].url, name="rag-b-restarted",
                                      AUTH_JWKS_URL=f"{auths[1].url}/api/auth/jwks", **rag_env)
            services.append(rags["rag-b"])
            urls["rag-b"] = rags["rag-b"].url
            for worker in workers:
                worker.result(timeout=DEADLINE_SECONDS)
            # A second round, after the restart, through both replicas.
            for worker in [pool.submit(workload, i) for i in range(USERS)]:
                worker.result(timeout=DEADLINE_SECONDS)

        server_errors = [entry for entry in recorder.statuses if entry[1] >= 500]
        assert not server_errors, server_errors
        assert all(replica == "rag-b" for replica, _ in recorder.transport_errors), recorder.transport_errors
        assert acknowledged, "no upload was acknowledged"

        def settled() -> bool:
            rows, vectors = document_rows(pgvector_database), vector_counts(pgvector_database)
            return all(rows[d][1] == "ready" and rows[d][2] == vectors.get(d, 0) > 1 for d in rows)

        wait_for(settled, "every document ready with all its vectors")
        rows = document_rows(pgvector_database)
        assert set(acknowledged) <= set(rows)
        assert all(rows[d][0] == owner for d, owner in acknowledged.items())
        victim_rows = [row for row in rows.values() if row[3] == victim_title]
        assert len(victim_rows) == 1 and victim_rows[0][1] == "ready"
        assert victim_rows[0][2] > 100  # the whole long document, repaired after the kill
        assert victim_generation(pgvector_database, victim_title) >= 2  # re-claimed by repair

        assert seen, "no search, chat or list returned a document"
        foreign = [(user, document) for user, document in seen if rows[document][0] != user]
        assert not foreign, foreign

        for user, header in zip(users, headers, strict=True):
            for url in urls.values():
                me = httpx.get(f"{url}/me", headers=header, timeout=30)
                assert me.status_code == 200, me.text
                assert me.json()["user_id"] == user["user"]["id"]
                listed = httpx.get(f"{url}/documents", headers=header, params={"limit": 100}, timeout=30)
                assert listed.status_code == 200, listed.text
                assert {d["id"] for d in listed.json()["documents"]} == {
                    d for d, row in rows.items() if row[0] == user["user"]["id"]}
    finally:
        for service in reversed(services):
            service.stop()
