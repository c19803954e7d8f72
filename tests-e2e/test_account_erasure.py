"""Deleting an account through the auth-service erases it in the rag-service (real processes,
embedded defaults: PGlite, SQLite, Qdrant Edge): the rag-service reads the auth-service's
account events feed (GET /auth/events with ACCOUNT_EVENTS_TOKEN) and erases the user's
personal collections, documents, vectors and conversations; what the user saved into an
organization's collection stays the organization's. Afterwards no row of the rag-service's
database and no vector names the user. Twice: with the rag-service up, and with the
rag-service stopped during the deletion and started again. Prints the time from the
deletion to the erasure in both cases. And deleting an organization erases what `org:<id>` owned."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import httpx
import jwt
import pytest

from conftest import ARTIFACTS
from stack import Service, start_auth, start_rag
from test_organizations import Member, delivered_invitation

PASSWORD = "correct horse battery"


def rows_naming(database: Path, needle: str) -> list[str]:
    """Every `table.column` of the rag-service's SQLite database holding `needle` (read beside
    the running service: WAL lets a reader in)."""
    found = []
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=20) as connection:
        tables = [row[0] for row in connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
        for table in tables:
            for column in [row[1] for row in connection.execute(f'PRAGMA table_info("{table}")')]:
                hits = connection.execute(f'SELECT count(*) FROM "{table}" WHERE CAST("{column}" AS TEXT) LIKE ?',
                                          (f"%{needle}%",)).fetchone()[0]
                if hits:
                    found.append(f"{table}.{column}")
    return found


def points_in_store(data_dir: Path, owner: str, document_ids: list[str]) -> tuple[int, int]:
    """(points carrying `owner`, points of each of `document_ids`) in the stopped rag-service's
    Qdrant Edge store, opened the way the service opens it."""
    from rag_service.config import Settings
    from rag_service.providers.local_embedder import MODEL_NAME
    from rag_service.storage.access import document_points, owner_points
    from rag_service.storage.factory import build_vector_store

    settings = Settings(_env_file=None, data_dir=data_dir)
    store = build_vector_store(settings, model_name=MODEL_NAME, dimension=384)
    assert (store.path / "edge_config.json").exists(), "the service's own store, not a new empty one"

    async def count() -> tuple[int, ...]:
        try:
            return (await store.count(owner_points(owner)),
                    *[await store.count(document_points(document_id)) for document_id in document_ids])
        finally:
            await store.close()

    return asyncio.run(count())


def wait_until(condition, what: str, deadline: float = 60.0) -> float:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < deadline, f"{what}: not within {deadline} s"
        time.sleep(0.05)
    return time.monotonic()


def rag_call(rag_url: str, token: str, method: str, path: str, **kwargs: object) -> httpx.Response:
    return httpx.request(method, f"{rag_url}{path}", headers={"Authorization": f"Bearer {token}"}, timeout=60, **kwargs)


def populate(auth: Service, rag_url: str) -> dict:
    """Bob owns an organization with Alice as admin; Alice saves a personal document and one
    into a collection of the organization, and chats."""
    bob, alice = Member(auth.url), Member(auth.url)  # signed up with PASSWORD (conftest.sign_up)
    alice_id = jwt.decode(alice.token(), options={"verify_signature": False})["sub"]
    org = bob.create("Erasure")
    bob.invite(org, alice.email, "admin")
    alice.org("POST", "accept-invitation", json={"invitationId": delivered_invitation(auth, alice.email)})
    token = alice.token()
    personal = rag_call(rag_url, token, "POST", "/save-document", json={
        "title": "Alice's diary", "content": "Alice keeps her allotment notes here: beans, peas and chard."})
    assert personal.status_code == 201, personal.text
    team = rag_call(rag_url, token, "POST", "/collections", json={"name": "Team", "organization_id": org})
    assert team.status_code == 201, team.text
    shared = rag_call(rag_url, token, "POST", "/save-document", json={
        "title": "Team plan", "content": "The team plants beans in April.", "collection_id": team.json()["id"]})
    assert shared.status_code == 201, shared.text
    chat = rag_call(rag_url, token, "POST", "/chat", json={"query": "What does Alice grow?", "stream": False})
    assert chat.status_code == 200, chat.text
    return {"alice": alice, "alice_id": alice_id, "bob": bob, "org": org, "token": token,
            "personal": personal.json()["document_id"], "shared": shared.json()["document_id"]}


def delete_account(auth_url: str, session: str) -> float:
    response = httpx.request("DELETE", f"{auth_url}/auth/me", json={"password": PASSWORD}, timeout=30,
                             headers={"Authorization": f"Bearer {session}"})
    assert response.status_code == 200, response.text
    return time.monotonic()


def refused_once_followed(rag_url: str, token: str, code: str) -> None:
    """Wait until the rag-service refuses `token` with 401 `code`. The staleness follower and
    the erasure consumer poll the feed on separate schedules (docs/security.md sections 2 and
    11): each applies the event within its own poll interval, in no order relative to the
    other, so the refusal is awaited on its own rather than assumed done with the erasure."""
    answers: list[httpx.Response] = []

    def refused() -> bool:
        answers.append(rag_call(rag_url, token, "GET", "/documents"))
        return answers[-1].status_code == 401

    wait_until(refused, f"the token refused with {code}")
    assert answers[-1].json()["error"]["code"] == code, answers[-1].text
    assert {a.status_code for a in answers[:-1]} <= {200}, "before the refusal the token still worked, nothing else"


def check_what_remains(rag_url: str, world: dict) -> None:
    """Bob still sees the organization's document Alice saved; Alice's old token is refused."""
    bobs = world["bob"].token()
    listed = rag_call(rag_url, bobs, "GET", "/documents").json()["documents"]
    assert {d["id"] for d in listed} == {world["shared"]}
    assert rag_call(rag_url, bobs, "GET", f"/documents/{world['shared']}").json()["status"] == "ready"
    refused_once_followed(rag_url, world["token"], "account_deleted")


# Deletions timed with the rag-service up (each a fresh account with its data).
UP_SAMPLES = 5


def test_deleting_accounts_erases_them_while_the_rag_service_runs(tmp_path: Path) -> None:
    auth = start_auth(tmp_path / "auth", ARTIFACTS, name="auth-erasure-up")
    rag: Service | None = None
    try:
        rag = start_rag(tmp_path / "rag", ARTIFACTS, auth.url, name="rag-erasure-up")
        database = tmp_path / "rag" / "rag.db"
        worlds, delays = [], []
        for _ in range(UP_SAMPLES):
            world = populate(auth, rag.url)
            assert rows_naming(database, world["alice_id"]), "the scan finds her before the deletion"
            deleted = delete_account(auth.url, world["alice"].session)
            erased = wait_until(lambda: not rows_naming(database, world["alice_id"]), "erasure")
            delays.append(erased - deleted)
            check_what_remains(rag.url, world)
            worlds.append(world)
        print(f"\nerasure with the rag-service up (ACCOUNT_EVENTS_POLL_SECONDS=5), {UP_SAMPLES} deletions: "
              + ", ".join(f"{d:.2f}" for d in delays) + f" s (mean {sum(delays) / len(delays):.2f} s)")
        rag.stop()
        for world in worlds:
            assert rows_naming(database, world["alice_id"]) == []
            owned, personal, shared = points_in_store(tmp_path / "rag", world["alice_id"],
                                                      [world["personal"], world["shared"]])
            assert (owned, personal) == (0, 0)
            assert shared > 0, "the organization's document keeps its vectors (and this is the service's store)"
    finally:
        if rag:
            rag.stop()
        auth.stop()


def test_an_account_deleted_while_the_rag_service_is_down_is_erased_at_its_next_start(tmp_path: Path) -> None:
    auth = start_auth(tmp_path / "auth", ARTIFACTS, name="auth-erasure-down")
    rag: Service | None = None
    try:
        rag = start_rag(tmp_path / "rag", ARTIFACTS, auth.url, name="rag-erasure-down")
        world = populate(auth, rag.url)
        database = tmp_path / "rag" / "rag.db"
        assert rows_naming(database, world["alice_id"])
        rag.stop()
        deleted = delete_account(auth.url, world["alice"].session)
        restart = time.monotonic()
        rag = start_rag(tmp_path / "rag", ARTIFACTS, auth.url, name="rag-erasure-down-again")
        ready = time.monotonic()
        erased = wait_until(lambda: not rows_naming(database, world["alice_id"]), "erasure")
        print(f"\nerasure after a restart: {erased - deleted:.2f} s after the deletion (start {ready - restart:.2f} s; "
              f"erased {max(0.0, erased - ready):.2f} s after it first answered /health)")
        check_what_remains(rag.url, world)
        rag.stop()
        assert rows_naming(database, world["alice_id"]) == []
        owned, personal, shared = points_in_store(tmp_path / "rag", world["alice_id"], [world["personal"], world["shared"]])
        assert (owned, personal, shared > 0) == (0, 0, True)
    finally:
        if rag:
            rag.stop()
        auth.stop()


def test_deleting_an_organization_erases_its_collections_documents_and_vectors(tmp_path: Path) -> None:
    auth = start_auth(tmp_path / "auth", ARTIFACTS, name="auth-erasure-org")
    rag: Service | None = None
    try:
        rag = start_rag(tmp_path / "rag", ARTIFACTS, auth.url, name="rag-erasure-org")
        world = populate(auth, rag.url)
        database = tmp_path / "rag" / "rag.db"
        owner = f"org:{world['org']}"
        assert rows_naming(database, owner)
        world["bob"].org("POST", "delete", json={"organizationId": world["org"]})
        deleted = time.monotonic()
        erased = wait_until(lambda: not rows_naming(database, owner), "erasure of the organization")
        print(f"\norganization erased {erased - deleted:.2f} s after its deletion")
        alices = world["alice"].token()
        listed = rag_call(rag.url, alices, "GET", "/documents").json()["documents"]
        assert {d["id"] for d in listed} == {world["personal"]}, "Alice keeps her own document"
        refused_once_followed(rag.url, world["token"], "token_stale")
        rag.stop()
        owned, shared, personal = points_in_store(tmp_path / "rag", owner, [world["shared"], world["personal"]])
        assert (owned, shared, personal > 0) == (0, 0, True)
    finally:
        if rag:
            rag.stop()
        auth.stop()
