"""Who may read what: the one access filter behind every SQL statement and vector query.

An `Access` is built from the verified caller (`deps.current_access`): the user id in the
token's `sub` and the organization memberships in its `orgs` claim (auth/orgs.py).

Owners. Documents live in collections, and a collection belongs to one *owner*, written as
an owner key: the user id for a personal collection, `org:<organization id>` for an
organization's. Every document row and every vector point carries its collection's owner
key, so one rule decides both stores: a caller reads what its `readable_owners` own (itself
and every organization in the token) and writes what its `writable_owners` own (itself and
the organizations where it is admin or owner). Conversations stay personal.

What an `Access` may see is decided here, in two functions, one per kind of store:
- `access_filter(access, ...)` -> the `ChunkFilter` every vector search and count takes
  (`storage/filters.py::filter_spec` turns its owners into the first condition of every
  store's filter); `document_points(document_id)` is the bookkeeping filter of one
  document's points, whatever their owner (a move changes it), for ingestion runs and
  deletes that hold the document's claim;
- `access_condition(access, Model)` -> the SQL condition on documents, collections,
  conversations and messages (a message is visible when its conversation is); with
  `write=True`, the rows the caller may change. `scoped(statement, access, Model)` adds it
  to a statement and marks the statement as scoped.

Sessions made by `storage.db.create_engine_and_sessionmaker` refuse (`UnscopedQuery`) any
ORM statement that reads or changes those tables without that mark, so a query that
forgets the filter fails the first time a test runs it. Three kinds of statements carry an
explicit `unscoped(statement, reason)` instead, each with its reason in the code:
- system work that spans owners by design: start-up/periodic repair and `rag reindex`
  (documents/maintenance.py);
- the erasure of a deleted account or organization (accounts/erasure.py), keyed by the owner
  key or user id the auth-service's feed named, with `owner_points(owner)` for its vectors;
- the ingestion claim protocol (documents/claims.py, indexing.py): statements keyed by a
  document id and the claim's generation, which only a scoped or a system claim obtains.
Raw SQL text is never used on these tables.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Delete, Select, Table, Update, event, select
from sqlalchemy.orm import ORMExecuteState, Session
from sqlalchemy.sql.util import find_tables

from rag_service.core.roles import OrgRole
from rag_service.storage.models import Collection, Conversation, Document, Message
from rag_service.storage.vectors import ChunkFilter, metadata_field

OwnedModel = type[Document] | type[Collection] | type[Conversation] | type[Message]
Statement = TypeVar("Statement", Select[Any], Update, Delete)

# Execution options marking a statement: the Access it was scoped to, or why it is not.
SCOPED_OPTION = "rag_access"
UNSCOPED_OPTION = "rag_unscoped_because"
OWNED_TABLES = frozenset(model.__tablename__ for model in (Document, Collection, Conversation, Message))

# Owner keys of organizations; a user id never starts with it (auth/tokens.py refuses one).
ORG_OWNER_PREFIX = "org:"
# Roles that may change an organization's collections and documents; members only read.
WRITER_ROLES = frozenset({OrgRole.OWNER, OrgRole.ADMIN})


def org_owner(org_id: str) -> str:
    """The owner key of an organization's collections and documents."""
    return ORG_OWNER_PREFIX + org_id


def org_of(owner: str) -> str | None:
    """The organization id of an owner key, None for a user's."""
    return owner[len(ORG_OWNER_PREFIX):] if owner.startswith(ORG_OWNER_PREFIX) else None


@dataclass(frozen=True)
class Access:
    """What a verified caller may see and change: its own collections, documents and
    conversations, and the collections and documents of its organizations (by role)."""

    user_id: str
    # (organization id, the caller's role there), from the token's `orgs` claim; a mapping
    # is accepted and kept as pairs sorted by id (hashable, and a stable owner order).
    orgs: tuple[tuple[str, OrgRole], ...] | Mapping[str, OrgRole] = ()

    def __post_init__(self) -> None:
        # A real check (asserts vanish under `python -O`): an empty id would scope nothing.
        if not isinstance(self.user_id, str) or not self.user_id.strip():
            raise ValueError("an access scope needs the caller's user id")
        if self.user_id.startswith(ORG_OWNER_PREFIX):
            raise ValueError("a user id cannot look like an organization's owner key")
        pairs = self.orgs.items() if isinstance(self.orgs, Mapping) else self.orgs
        object.__setattr__(self, "orgs", tuple(sorted((org, OrgRole(role)) for org, role in pairs)))

    @property
    def roles(self) -> dict[str, OrgRole]:
        return dict(self.orgs)

    @property
    def readable_owners(self) -> tuple[str, ...]:
        """The caller first, then its organizations in a stable order."""
        return (self.user_id, *(org_owner(org) for org, _ in self.orgs))

    @property
    def writable_owners(self) -> tuple[str, ...]:
        return (self.user_id, *(org_owner(org) for org, role in self.orgs if role in WRITER_ROLES))

    def can_read(self, owner: str) -> bool:
        return owner in self.readable_owners

    def can_write(self, owner: str) -> bool:
        return owner in self.writable_owners

    def role_for(self, owner: str) -> OrgRole | None:
        """The caller's role over an owner's collections: OWNER of its own, its role in an
        organization, None when it has none."""
        if owner == self.user_id:
            return OrgRole.OWNER
        org = org_of(owner)
        return self.roles.get(org) if org is not None else None


def as_access(caller: Access | str) -> Access:
    """The caller's Access; a bare user id (the CLI, tests) is a user in no organization."""
    return caller if isinstance(caller, Access) else Access(caller)


def _checked(access: Access) -> Access:
    if not isinstance(access, Access):
        raise TypeError(f"an Access is required to scope a query, got {type(access).__name__}")
    return access


# --- vectors -----------------------------------------------------------------------------


def access_filter(
    access: Access,
    *,
    collection_id: str | None = None,
    document_ids: list[str] | None = None,
    metadata: dict[str, list[str | int | float | bool]] | None = None,
) -> ChunkFilter:
    """The filter of every vector read: the chunks of every owner the caller may read,
    optionally narrowed to one collection, some documents and metadata values (conditions
    only ever narrow it: a collection of an owner the caller cannot read matches nothing).
    The default collection is the points without a collection id: only users' default
    collections have none, and the only user among the owners is the caller. The owners
    stay the same whatever the narrowing: they are also what keyword IDF is computed over."""
    access = _checked(access)
    for key in metadata or {}:
        metadata_field(key)  # rejects keys that are not plain field names (BadRequest)
    return ChunkFilter(
        owners=access.readable_owners,
        collection_id=collection_id,
        document_ids=tuple(document_ids or ()),
        metadata=tuple((key, tuple(values)) for key, values in sorted((metadata or {}).items())),
    )


def document_points(document_id: str, *, generation: int | None = None, below: int | None = None) -> ChunkFilter:
    """One document's points, whatever owner they carry: all of them, those written by
    exactly `generation`, or by any generation `below` the given one (points without a
    generation count as 0). For the holder of the document's claim only (ingestion runs,
    deletes, repair): document ids are UUIDs, unique across owners, and a move leaves points
    of the old owner behind for the next run to remove."""
    if not isinstance(document_id, str) or not document_id:
        raise ValueError("a document's points need its id")
    return ChunkFilter(owners=(), document_ids=(document_id,), generation=generation, generation_below=below)


def owner_points(owner: str) -> ChunkFilter:
    """Every point of one owner (a user id or `org:<id>`), whatever the collection or document:
    for the erasure of a deleted account or organization (accounts/erasure.py) only."""
    if not isinstance(owner, str) or not owner.strip():
        raise ValueError("an owner's points need the owner key")
    return ChunkFilter(owners=(owner,))


# --- SQL ---------------------------------------------------------------------------------


def access_condition(access: Access, model: OwnedModel, *, write: bool = False) -> ColumnElement[bool]:
    """The rows of `model` the caller may see (`write`: may change), as a SQL condition."""
    access = _checked(access)
    if model is Document or model is Collection:
        owners = access.writable_owners if write else access.readable_owners
        return model.owner == owners[0] if len(owners) == 1 else model.owner.in_(owners)
    if model is Conversation:
        return model.user_id == access.user_id
    if model is Message:
        # Not correlated to an enclosing query's conversations: its own complete subquery.
        visible = select(Conversation.id).where(access_condition(access, Conversation)).correlate(None)
        return Message.conversation_id.in_(visible)
    raise TypeError(f"{getattr(model, '__name__', model)!r} has no access rule")


def scoped(statement: Statement, access: Access, model: OwnedModel, *, write: bool = False) -> Statement:
    """`statement` narrowed to the rows of `model` the caller may see (`write`: may change),
    and marked so.

    An UPDATE or DELETE does not synchronize objects already loaded in the session (no
    service relies on it): the ORM would otherwise find the rows with a SELECT of its own,
    which carries the condition but not the mark.
    """
    statement = statement.where(access_condition(access, model, write=write)).execution_options(
        **{SCOPED_OPTION: access})
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
