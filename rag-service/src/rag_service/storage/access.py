"""Who may read what: the one access filter behind every SQL statement and vector query.

An `Access` is built from the verified caller (`deps.current_access`): today the user id in
the token's `sub`. Organization memberships join it next (issue 17); what an `Access` may
see is decided in two functions, one per kind of store:
- `access_filter(access, ...)` -> the `ChunkFilter` every vector search, count and delete
  takes (`storage/filters.py::filter_spec` turns its access fields into the first condition
  of every store's filter);
- `access_condition(access, Model)` -> the SQL condition on documents, conversations and
  messages (a message is visible when its conversation is). `scoped(statement, access,
  Model)` adds it to a statement and marks the statement as scoped.

Sessions made by `storage.db.create_engine_and_sessionmaker` refuse (`UnscopedQuery`) any
ORM statement that reads or changes those tables without that mark, so a query that
forgets the filter fails the first time a test runs it. Two kinds of statements carry an
explicit `unscoped(statement, reason)` instead, each with its reason in the code:
- system work that spans owners by design: start-up/periodic repair and `rag reindex`
  (documents/maintenance.py);
- the ingestion claim protocol (documents/claims.py, indexing.py): statements keyed by a
  document id and the claim's generation, which only a scoped or a system claim obtains.
Raw SQL text is never used on these tables.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Delete, Select, Table, Update, event, select
from sqlalchemy.orm import ORMExecuteState, Session
from sqlalchemy.sql.util import find_tables

from rag_service.storage.models import Conversation, Document, Message
from rag_service.storage.vectors import ChunkFilter, metadata_field

OwnedModel = type[Document] | type[Conversation] | type[Message]
Statement = TypeVar("Statement", Select[Any], Update, Delete)

# Execution options marking a statement: the Access it was scoped to, or why it is not.
SCOPED_OPTION = "rag_access"
UNSCOPED_OPTION = "rag_unscoped_because"
OWNED_TABLES = frozenset(model.__tablename__ for model in (Document, Conversation, Message))


@dataclass(frozen=True)
class Access:
    """What a verified caller may see: their own documents, chunks and conversations."""

    user_id: str

    def __post_init__(self) -> None:
        # A real check (asserts vanish under `python -O`): an empty id would scope nothing.
        if not isinstance(self.user_id, str) or not self.user_id.strip():
            raise ValueError("an access scope needs the caller's user id")


def _checked(access: Access) -> Access:
    if not isinstance(access, Access):
        raise TypeError(f"an Access is required to scope a query, got {type(access).__name__}")
    return access


# --- vectors -----------------------------------------------------------------------------


def access_filter(
    access: Access,
    *,
    document_ids: list[str] | None = None,
    metadata: dict[str, list[str | int | float | bool]] | None = None,
) -> ChunkFilter:
    """The filter of every vector read and delete: the caller's chunks, optionally narrowed
    to some documents and metadata values (conditions only ever narrow it)."""
    access = _checked(access)
    for key in metadata or {}:
        metadata_field(key)  # rejects keys that are not plain field names (BadRequest)
    return ChunkFilter(
        user_id=access.user_id,
        document_ids=tuple(document_ids or ()),
        metadata=tuple((key, tuple(values)) for key, values in sorted((metadata or {}).items())),
    )


def generation_filter(
    access: Access, document_id: str, *, generation: int | None = None, below: int | None = None
) -> ChunkFilter:
    """One document's points written by exactly `generation`, or by any generation `below`
    the given one (points without a generation count as 0): ingestion bookkeeping."""
    return replace(access_filter(access, document_ids=[document_id]), generation=generation, generation_below=below)


# --- SQL ---------------------------------------------------------------------------------


def access_condition(access: Access, model: OwnedModel) -> ColumnElement[bool]:
    """The rows of `model` the caller may see, as a SQL condition."""
    access = _checked(access)
    if model is Document or model is Conversation:
        return model.user_id == access.user_id
    if model is Message:
        # Not correlated to an enclosing query's conversations: its own complete subquery.
        visible = select(Conversation.id).where(access_condition(access, Conversation)).correlate(None)
        return Message.conversation_id.in_(visible)
    raise TypeError(f"{getattr(model, '__name__', model)!r} has no access rule")


def scoped(statement: Statement, access: Access, model: OwnedModel) -> Statement:
    """`statement` narrowed to the rows of `model` the caller may see, and marked so.

    An UPDATE or DELETE does not synchronize objects already loaded in the session (no
    service relies on it): the ORM would otherwise find the rows with a SELECT of its own,
    which carries the condition but not the mark.
    """
    statement = statement.where(access_condition(access, model)).execution_options(**{SCOPED_OPTION: access})
    if isinstance(statement, (Update, Delete)):
        statement = statement.execution_options(synchronize_session=False)
    return statement


def unscoped(statement: Statement, reason: str) -> Statement:
    """`statement` as it is, for system work across owners; `reason` says why it may be."""
    if not reason.strip():
        raise ValueError("an unscoped statement needs its reason")
    return statement.execution_options(**{UNSCOPED_OPTION: reason})


class UnscopedQuery(RuntimeError):
    """A statement on owned tables built without `scoped` or `unscoped`: a bug."""


class ScopedSession(Session):
    """The session every part of the service uses: refuses unscoped statements (see above)."""


@event.listens_for(ScopedSession, "do_orm_execute")
def _refuse_unscoped(state: ORMExecuteState) -> None:
    if state.is_relationship_load or state.is_column_load:
        return  # more of an object that a scoped (or system) statement already returned
    options = state.execution_options
    if options.get(SCOPED_OPTION) is not None or options.get(UNSCOPED_OPTION):
        return
    touched = sorted(OWNED_TABLES.intersection(
        table.name for table in find_tables(state.statement, check_columns=True, include_crud=True)
        if isinstance(table, Table)
    ))
    if touched:
        raise UnscopedQuery(f"a statement on {', '.join(touched)} without an access scope: "
                            "build it with storage.access.scoped (or unscoped, with its reason)")
