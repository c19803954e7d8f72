"""GET /documents/summary: the caller's documents by status, chunks and bytes (SQLite and Postgres)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import update

from rag_service.storage.access import unscoped
from rag_service.storage.models import Document, DocumentStatus

ASCII = "Otters hold hands while they sleep so that they do not drift apart on the current."
ACCENTED = "Les loutres se tiennent la main en dormant; elles flottent ensemble, côte à côte, sûres."


async def test_summary_counts_statuses_chunks_and_bytes_of_the_caller_only(
    db_client: Any, db_app: Any, auth_headers: Any, user_id: str
) -> None:
    headers = auth_headers(user_id)
    empty = await db_client.get("/documents/summary", headers=headers)
    assert empty.status_code == 200, empty.text
    quotas = {"max_documents": db_app.state.runtime.settings.quota_max_documents,
              "max_characters": db_app.state.runtime.settings.quota_max_characters}
    own = {"owner": user_id, "organization_id": None}
    assert empty.json() == {"documents": 0, "by_status": {"indexing": 0, "ready": 0, "failed": 0, "deleting": 0},
                            "chunks": 0, "bytes": 0, "characters": 0, **quotas,
                            "owners": [{**own, "documents": 0, "characters": 0, **quotas}]}

    ids = []
    for title, text in (("ascii", ASCII), ("accented", ACCENTED)):
        saved = await db_client.post("/save-document", json={"title": title, "content": text}, headers=headers)
        assert saved.status_code == 201, saved.text
        ids.append(saved.json()["document_id"])
    stored = [(await db_client.get(f"/documents/{i}", headers=headers)).json() for i in ids]
    expected_bytes = sum(len(d["content"].encode()) for d in stored)
    assert expected_bytes > sum(len(d["content"]) for d in stored), "the accented text has multi-byte characters"

    summary = (await db_client.get("/documents/summary", headers=auth_headers(user_id, scope="read"))).json()
    characters = sum(len(d["content"]) for d in stored)
    assert summary == {"documents": 2, "by_status": {"indexing": 0, "ready": 2, "failed": 0, "deleting": 0},
                       "chunks": sum(d["chunk_count"] for d in stored), "bytes": expected_bytes,
                       "characters": characters, **quotas,
                       "owners": [{**own, "documents": 2, "characters": characters, **quotas}]}

    # A failed document counts in its status and its bytes, but has no chunks in the store.
    async with db_app.state.runtime.sessionmaker() as session:
        await session.execute(unscoped(update(Document).where(Document.id == ids[1])
                                       .values(status=DocumentStatus.FAILED, error="extraction failed"),
                                       "test: a failure no route can cause on demand"))
        await session.commit()
    after = (await db_client.get("/documents/summary", headers=headers)).json()
    assert after["by_status"] == {"indexing": 0, "ready": 1, "failed": 1, "deleting": 0}
    assert after["chunks"] == stored[0]["chunk_count"] and after["bytes"] == expected_bytes

    other = (await db_client.get("/documents/summary", headers=auth_headers())).json()
    assert other["documents"] == 0 and other["bytes"] == 0


async def test_summary_needs_a_token(db_client: Any) -> None:
    response = await db_client.get("/documents/summary")
    assert response.status_code == 401
    assert response.json()["error"]["code"]


async def test_summary_shows_the_usage_of_every_owner_the_caller_reads(
    db_client: Any, db_app: Any, auth_headers: Any, user_id: str
) -> None:
    """A document counts against its collection's owner: a member sees the organization's
    usage (what every member saved there) beside its own, with the organization's quotas."""
    org = f"org-{user_id}"
    admin = auth_headers(user_id, orgs=[{"id": org, "role": "admin"}])
    created = await db_client.post("/collections", json={"name": "Team", "organization_id": org}, headers=admin)
    team = created.json()["id"]
    for title, text, collection in (("mine", ASCII, None), ("team", ACCENTED, team)):
        body = {"title": title, "content": text, **({"collection_id": collection} if collection else {})}
        assert (await db_client.post("/save-document", json=body, headers=admin)).status_code == 201
    member = auth_headers(orgs=[{"id": org, "role": "member"}])
    settings = db_app.state.runtime.settings
    owners = (await db_client.get("/documents/summary", headers=member)).json()["owners"]
    assert owners[1] == {"owner": f"org:{org}", "organization_id": org, "documents": 1, "characters": len(ACCENTED),
                         "max_documents": settings.quota_org_max_documents,
                         "max_characters": settings.quota_org_max_characters}
    assert owners[0]["documents"] == 0, "the member saved nothing of its own"
    mine = (await db_client.get("/documents/summary", headers=admin)).json()
    assert [(o["owner"], o["documents"]) for o in mine["owners"]] == [(user_id, 1), (f"org:{org}", 1)]
    assert mine["characters"] == len(ASCII), "the top level is the caller's own quota"
