"""The `rag` command line with typer's CliRunner on real stores (SQLite, Qdrant Edge, MiniLM)."""

from __future__ import annotations

import asyncio
import re
import shutil

from prometheus_client import REGISTRY
from typer.testing import CliRunner

from rag_service.cli import app, collect_files
from rag_service.storage.access import Access, access_filter, scoped
from rag_service.storage.db import create_engine_and_sessionmaker
from rag_service.storage.factory import build_vector_store
from rag_service.storage.models import Document

runner = CliRunner()


def summary_row(output: str) -> list[int]:
    """The numbers of the summary table: added, duplicates, skipped, failed, chunks."""
    rows = [line for line in output.splitlines() if re.fullmatch(r"[│|\s\d]+", line) and re.search(r"\d", line)]
    return [int(n) for n in re.findall(r"\d+", rows[-1])]


def make_folder(root):
    folder = root / "docs"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("Alpha document about rivers and their deltas.")
    (folder / "b.md").write_text("# Beta\n\nBeta document about mountains.")
    (folder / "copy-of-a.txt").write_text("Alpha document about rivers and their deltas.\n")  # duplicate
    (folder / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n....")  # unsupported
    (folder / "broken.txt").write_bytes(b"caf\xe9 au lait")  # Latin-1, not UTF-8
    (folder / "sub" / "c.html").write_text("<html><title>Gamma</title><body><p>Gamma about forests.</p></body></html>")
    (folder / ".hidden.txt").write_text("never ingested")
    return folder


async def counts(settings, user_id):
    store = build_vector_store(settings, "all-MiniLM-L6-v2", 384)
    engine, sessionmaker = create_engine_and_sessionmaker(settings)
    try:
        vectors = await store.count(access_filter(Access(user_id)))
        async with sessionmaker() as session:
            from sqlalchemy import func, select

            rows = await session.scalar(scoped(select(func.count()).select_from(Document), Access(user_id), Document))
        return rows, vectors
    finally:
        await store.close()
        await engine.dispose()


def test_collect_files_skips_hidden_and_respects_recursion(tmp_path) -> None:
    folder = make_folder(tmp_path)
    flat = [p.name for p in collect_files(folder, recursive=False)]
    assert flat == ["a.txt", "b.md", "broken.txt", "copy-of-a.txt", "image.png"]
    assert "c.html" in [p.name for p in collect_files(folder, recursive=True)]
    assert collect_files(folder / "a.txt", recursive=False) == [folder / "a.txt"]


def test_ingest_folder_then_reindex_after_wipe(tmp_path, make_settings) -> None:
    settings = make_settings()
    folder = make_folder(tmp_path)
    stored_before = REGISTRY.get_sample_value("rag_ingested_chunks_total")

    result = runner.invoke(app, ["ingest", str(folder), "--user-id", "cli-user", "--recursive"], obj=settings)
    # broken.txt fails (not decodable) -> exit code 1, everything else went in.
    assert result.exit_code == 1, result.output
    added, duplicates, skipped, failed, chunks = summary_row(result.output)
    assert (added, duplicates, skipped, failed) == (3, 1, 1, 1)
    assert chunks == 3
    # Counted by the documents service, not only by the HTTP routes.
    assert REGISTRY.get_sample_value("rag_ingested_chunks_total") - stored_before == 3
    assert "image.png: skipped: unsupported file type" in result.output
    assert "broken.txt" in result.output
    assert asyncio.run(counts(settings, "cli-user")) == (3, 3)

    again = runner.invoke(app, ["ingest", str(folder / "a.txt"), "--user-id", "cli-user"], obj=settings)
    assert again.exit_code == 0 and summary_row(again.output)[:2] == [0, 1]

    # Wipe the vector store completely; SQL still has the documents.
    shutil.rmtree(settings.data_dir / "qdrant")
    assert asyncio.run(counts(settings, "cli-user")) == (3, 0)
    reindexed = runner.invoke(app, ["reindex"], obj=settings)
    assert reindexed.exit_code == 0, reindexed.output
    assert "re-indexed 3 documents (3 chunks), 0 failed" in reindexed.output
    assert asyncio.run(counts(settings, "cli-user")) == (3, 3)


def test_ingest_requires_a_user_and_an_existing_path(tmp_path, make_settings) -> None:
    settings = make_settings()
    assert runner.invoke(app, ["ingest", str(tmp_path / "missing"), "--user-id", "u"], obj=settings).exit_code == 2
    assert runner.invoke(app, ["ingest", str(tmp_path)], obj=settings).exit_code == 2
    assert runner.invoke(app, ["ingest", str(tmp_path), "--user-id", "  "], obj=settings).exit_code == 2


def test_migrate(make_settings) -> None:
    settings = make_settings()
    result = runner.invoke(app, ["migrate"], obj=settings)
    assert result.exit_code == 0 and "up to date" in result.output
    assert (settings.data_dir / "rag.db").exists()
