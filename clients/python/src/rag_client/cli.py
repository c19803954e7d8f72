"""`rag-client`: sync a folder, ask a question (streamed, with sources), list and create
collections, manage API keys.

Credentials come from options or the environment: RAG_URL, AUTH_URL, and RAG_API_KEY (or
RAG_EMAIL + RAG_PASSWORD; API-key management needs the email/password sign-in). An account
with two-factor codes is asked for its code on the terminal, or takes it from
--two-factor-code (RAG_TWO_FACTOR_CODE)."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from rag_client.client import RagClient
from rag_client.errors import AuthenticationError, RagError
from rag_client.folder_sync import BATCH_FILES, FolderSync, supported_files
from rag_client.models import DeltaEvent, DoneEvent, SourcesEvent

app = typer.Typer(help="Client for the rag-service: folder sync, questions, collections, API keys.", no_args_is_help=True)
keys_app = typer.Typer(help="Create, list and revoke API keys (needs --email/--password).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
collections_app = typer.Typer(help="List and create collections (ids for --collection).", no_args_is_help=True)
app.add_typer(collections_app, name="collections")
console = Console()
errors = Console(stderr=True)


class Options:
    def __init__(self, **values: Optional[str]) -> None:
        self.values = values

    def client(self) -> RagClient:
        v = self.values
        if v["api_key"]:
            return RagClient(v["rag_url"], v["auth_url"], api_key=v["api_key"])
        if v["email"]:
            return RagClient(v["rag_url"], v["auth_url"], email=v["email"], password=v["password"] or "",
                             two_factor_code=self.two_factor_code)
        errors.print("[red]error:[/] give --api-key (RAG_API_KEY) or --email and --password (RAG_EMAIL, RAG_PASSWORD)")
        raise typer.Exit(2)

    def two_factor_code(self) -> str:
        """Asked only when the sign-in wants it: the option's code, or one typed on the terminal
        (hidden). Without a terminal there is nobody to ask, so the error says what to give."""
        if self.values["two_factor_code"]:
            return self.values["two_factor_code"]
        if not sys.stdin.isatty():
            raise AuthenticationError(401, "two_factor_required", "this account has two-factor codes: give "
                                      "--two-factor-code (RAG_TWO_FACTOR_CODE), or run on a terminal to be asked")
        return typer.prompt("Two-factor code (or a backup code)", hide_input=True, err=True)


@app.callback()
def main(
    ctx: typer.Context,
    rag_url: Annotated[str, typer.Option(envvar="RAG_URL", help="rag-service base URL")] = "http://127.0.0.1:8000",
    auth_url: Annotated[str, typer.Option(envvar="AUTH_URL", help="auth-service base URL")] = "http://127.0.0.1:3001",
    api_key: Annotated[Optional[str], typer.Option(envvar="RAG_API_KEY", help="API key (rag_...)")] = None,
    email: Annotated[Optional[str], typer.Option(envvar="RAG_EMAIL")] = None,
    password: Annotated[Optional[str], typer.Option(envvar="RAG_PASSWORD")] = None,
    two_factor_code: Annotated[Optional[str], typer.Option(
        envvar="RAG_TWO_FACTOR_CODE", help="Authenticator or backup code, for an account with two-factor codes "
        "(default: asked on the terminal when the sign-in needs it)")] = None,
) -> None:
    ctx.obj = Options(rag_url=rag_url, auth_url=auth_url, api_key=api_key, email=email, password=password,
                      two_factor_code=two_factor_code)


def fail(exc: RagError) -> typer.Exit:
    errors.print(f"[red]error:[/] {exc.code}: {exc.message}")
    return typer.Exit(1)


@app.command()
def sync(
    ctx: typer.Context,
    folder: Annotated[Path, typer.Argument(exists=True, file_okay=False, help="Folder to upload")],
    delete: Annotated[bool, typer.Option("--delete", help="Delete documents whose files are gone")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON")] = False,
    batch_size: Annotated[int, typer.Option(min=1, max=100, help="Files per request (POST /documents/batch)")
                          ] = BATCH_FILES,
    collection: Annotated[Optional[str], typer.Option(
        "--collection", help="Collection id to sync into (default: your personal one); its own state file")] = None,
) -> None:
    """Upload the folder's documents (.pdf, .docx, .pptx, .xlsx, .odt, .epub, .html, .md and any text file) in
    batches; skip unchanged ones; resume after interruption. Every file not sent is listed with the reason."""
    with ctx.obj.client() as client:
        syncer = FolderSync(client, folder, delete=delete, batch_files=batch_size, collection_id=collection)
        total = len(supported_files(folder))
        try:
            with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                          console=errors, transient=as_json) as progress:
                task = progress.add_task("syncing", total=total)

                def advance(path: str, outcome: str) -> None:
                    if outcome not in ("deleted", "sending", "skipped"):
                        progress.advance(task)
                    progress.update(task, description=f"{outcome}: {path[-40:]}")

                report = syncer.run(advance)
        except RagError as exc:
            raise fail(exc) from None
    if as_json:
        console.print_json(json.dumps(report.as_dict()))
    else:
        for path, reason in report.skipped.items():
            errors.print(f"[dim]skipped:[/] {path}: {reason}")
        for path, reason in report.failed.items():
            errors.print(f"[yellow]failed:[/] {path}: {reason}")
        console.print(report.line())
    if report.failed:
        raise typer.Exit(1)


@app.command()
def ask(
    ctx: typer.Context,
    question: Annotated[str, typer.Argument(help="The question")],
    top_k: Annotated[int, typer.Option(help="Sources to retrieve")] = 5,
    collection: Annotated[Optional[str], typer.Option(
        "--collection", help="Only this collection's documents (default: every collection you can read)")] = None,
) -> None:
    """Stream a cited answer from your documents."""
    sources = []
    with ctx.obj.client() as client:
        try:
            for event in client.chat_stream(question, top_k=top_k, collection_id=collection):
                if isinstance(event, SourcesEvent):
                    sources = event.sources
                elif isinstance(event, DeltaEvent):
                    console.print(event.text, end="", markup=False, highlight=False, soft_wrap=True)
                elif isinstance(event, DoneEvent):
                    console.print()
        except RagError as exc:
            raise fail(exc) from None
    for source in sources:
        console.print(f"[{source.number}] {source.title} (chunk {source.chunk_index})", markup=False, highlight=False)


@collections_app.command("list")
def collections_list(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print them as JSON")] = False,
) -> None:
    """The collections you can read: yours, then your organizations'."""
    with ctx.obj.client() as client:
        try:
            found = client.list_collections()
        except RagError as exc:
            raise fail(exc) from None
    if as_json:
        console.print_json(json.dumps([dataclasses.asdict(c) for c in found]))
        return
    table = Table("id", "name", "organization", "role", "documents")
    for c in found:
        table.add_row(c.id, c.name, c.organization_id or "", c.role + ("" if c.can_write else " (read)"),
                      str(c.document_count))
    console.print(table)


@collections_app.command("create")
def collections_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument()],
    organization: Annotated[Optional[str], typer.Option(help="Organization id (you must be its admin or owner)")
                            ] = None,
) -> None:
    """Create a collection; its id is printed."""
    with ctx.obj.client() as client:
        try:
            created = client.create_collection(name, organization)
        except RagError as exc:
            raise fail(exc) from None
    console.print(created.id, markup=False, highlight=False)


@keys_app.command("create")
def keys_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument()],
    scope: Annotated[str, typer.Option(help="read or write")] = "read",
    expires_in_days: Annotated[Optional[int], typer.Option(help="1-365; default: never")] = None,
) -> None:
    """Create a key; it is printed once."""
    with ctx.obj.client() as client:
        try:
            key = client.create_api_key(name, scope, expires_in_days)
        except RagError as exc:
            raise fail(exc) from None
    console.print(key.key, markup=False, highlight=False)
    errors.print(f"id {key.id}, scope {key.scope}, expires {key.expires_at or 'never'}: store it now, it is not shown again")


@keys_app.command("list")
def keys_list(ctx: typer.Context) -> None:
    """Your keys: id, name, scope, first characters, expiry, last use (never the key itself)."""
    with ctx.obj.client() as client:
        try:
            keys = client.list_api_keys()
        except RagError as exc:
            raise fail(exc) from None
    table = Table("id", "name", "scope", "starts with", "expires", "last used")
    for key in keys:
        table.add_row(key.id, key.name or "", key.scope, key.start or "", key.expires_at or "never", key.last_used_at or "")
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(ctx: typer.Context, key_id: Annotated[str, typer.Argument()]) -> None:
    """Revoke a key by its id (from keys list): it can no longer be exchanged for tokens."""
    with ctx.obj.client() as client:
        try:
            client.revoke_api_key(key_id)
        except RagError as exc:
            raise fail(exc) from None
    console.print(f"revoked {key_id}")
