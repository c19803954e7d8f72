"""`rag`: operate the rag-service from a shell.

  rag migrate                          upgrade the SQL schema (Alembic head)
  rag serve                            run the HTTP server
  rag ingest PATH --user-id ID [-r]    add a file or a folder of files for one user
  rag reindex                          rebuild every vector from SQL (e.g. after a model change)

The embedded stores (SQLite, Qdrant Edge) are single-writer: stop `rag serve` before running
`ingest` or `reindex` against them, or point DATABASE_URL / QDRANT_URL at servers.
Tests pass their Settings as the Typer context object; otherwise the environment is read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from rag_service.config import Settings, get_settings
from rag_service.errors import AppError, UnsupportedMediaType

app = typer.Typer(help="rag-service administration", no_args_is_help=True, add_completion=False)
console = Console(highlight=False)
T = TypeVar("T")


def _settings(ctx: typer.Context) -> Settings:
    return ctx.obj if isinstance(ctx.obj, Settings) else get_settings()


def _migrate(settings: Settings) -> None:
    from rag_service.storage.db import run_migrations

    run_migrations(settings)


def _with_runtime(settings: Settings, work: Callable[[Any], Awaitable[T]]) -> T:
    """Migrate, build the runtime, run `work(runtime)`, always close the runtime."""
    from rag_service.runtime import build_runtime

    async def main() -> T:
        runtime = await build_runtime(settings)
        try:
            return await work(runtime)
        finally:
            await runtime.aclose()

    try:
        _migrate(settings)
        return asyncio.run(main())
    except AppError as exc:
        console.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(code=2) from exc


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=False)


@app.command()
def migrate(ctx: typer.Context) -> None:
    """Upgrade the database schema to the latest migration."""
    _migrate(_settings(ctx))
    console.print("database schema is up to date")


@app.command()
def serve(ctx: typer.Context) -> None:
    """Run the HTTP API (host/port from HOST and PORT; uvicorn options in http_hardening.py)."""
    from rag_service.main import run

    run(_settings(ctx))


@dataclass
class IngestSummary:
    added: int = 0
    duplicates: int = 0
    skipped: int = 0
    failed: int = 0
    chunks: int = 0
    problems: list[tuple[str, str]] = field(default_factory=list)


def collect_files(path: Path, recursive: bool) -> list[Path]:
    """The files to ingest under `path`, sorted; hidden files and folders are left out."""
    if path.is_file():
        return [path]
    candidates = path.rglob("*") if recursive else path.iterdir()
    return sorted(
        p for p in candidates
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
    )


async def ingest_files(runtime: Any, files: list[Path], user_id: str, progress: Progress | None = None) -> IngestSummary:
    summary = IngestSummary()
    task = progress.add_task("ingesting", total=len(files)) if progress else None
    for file in files:
        try:
            data = file.read_bytes()
            if len(data) > runtime.settings.max_upload_bytes:
                raise AppError(f"larger than {runtime.settings.max_upload_bytes} bytes")
            # Read in the sandboxed worker pool, with the same limits as an upload.
            extracted = await runtime.extraction_pool.extract(file.name, data)
            async with runtime.sessionmaker() as session:
                document, created = await runtime.documents.service(session).save(
                    user_id, extracted.title or extracted.source_name, extracted.content,
                    source_name=extracted.source_name, mime_type=extracted.mime_type,
                )
            if created:
                summary.added += 1
                summary.chunks += document.chunk_count
            else:
                summary.duplicates += 1
        except UnsupportedMediaType:
            summary.skipped += 1
            summary.problems.append((str(file), "skipped: unsupported file type"))
        except (AppError, OSError) as exc:
            summary.failed += 1
            summary.problems.append((str(file), getattr(exc, "message", None) or str(exc)))
        if progress is not None and task is not None:
            progress.advance(task)
    return summary


@app.command()
def ingest(
    ctx: typer.Context,
    path: Path = typer.Argument(..., exists=True, help="A file or a folder of files"),
    user_id: str = typer.Option(..., "--user-id", help="Owner of the documents (the JWT `sub`)"),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Include sub-folders"),
) -> None:
    """Add documents (.pdf, .docx, .pptx, .xlsx, .odt, .epub, .html, .md, text files of any name) for a user;
    duplicates are skipped, binaries reported."""
    if not user_id.strip():
        raise typer.BadParameter("must not be empty", param_hint="--user-id")
    files = collect_files(path, recursive)

    async def work(runtime: Any) -> IngestSummary:
        with _progress() as progress:
            return await ingest_files(runtime, files, user_id.strip(), progress)

    summary = _with_runtime(_settings(ctx), work)
    for name, reason in summary.problems:
        console.print(f"{name}: {reason}", soft_wrap=True)
    table = Table(title=f"Ingested {len(files)} files for {user_id}")
    for column in ("added", "duplicates", "skipped", "failed", "chunks"):
        table.add_column(column, justify="right")
    table.add_row(*(str(getattr(summary, c)) for c in ("added", "duplicates", "skipped", "failed", "chunks")))
    console.print(table)
    if summary.failed:
        raise typer.Exit(code=1)


@app.command()
def reindex(ctx: typer.Context) -> None:
    """Re-embed every document from SQL into the current embedding model's collection."""
    from rag_service.documents.maintenance import reindex_all

    async def work(runtime: Any) -> Any:
        with _progress() as progress:
            task = progress.add_task(f"re-indexing into {runtime.vector_store.collection}", total=None)
            report = await reindex_all(runtime.documents, on_progress=lambda done, total: progress.update(
                task, completed=done, total=total))
        optimize = getattr(runtime.vector_store, "optimize", None)
        if optimize is not None:  # Qdrant Edge has no background optimizer
            await optimize()
        return report

    report = _with_runtime(_settings(ctx), work)
    console.print(f"re-indexed {report.documents} documents ({report.chunks} chunks), {report.failed} failed")
    if report.failed:
        raise typer.Exit(code=1)
