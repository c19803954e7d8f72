"""Collections: list, create, rename, delete; and where a document may be saved.

A collection belongs to an owner (storage/access.py): the caller personally, or an
organization in the caller's token. Members of an organization read its collections;
admins and owners create, rename and delete them and add, move and delete their documents.
Every user also has a default personal collection, `personal` (not a row: see models.py),
which cannot be renamed or deleted.

A collection the caller cannot read is "not found"; one it can read but not change is
403 `insufficient_role`.
"""

from __future__ import annotations

import unicodedata

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from rag_service.collections.records import MAX_NAME_CHARS, CollectionView
from rag_service.core.ingestion_gate import IngestionGate
from rag_service.core.roles import OrgRole
from rag_service.errors import Conflict, Forbidden, NotFound, Unprocessable
from rag_service.storage.access import Access, org_owner, scoped
from rag_service.storage.locks import collection_lock
from rag_service.storage.models import DEFAULT_COLLECTION, Collection, Document, utcnow

# Per owner (a user's personal collections, or one organization's).
MAX_COLLECTIONS_PER_OWNER = 200
DEFAULT_COLLECTION_NAME = "Personal"


def insufficient_role(what: str) -> Forbidden:
    return Forbidden(f"your role does not allow {what}: organization members read, admins and owners write",
                     code="insufficient_role")


def checked_name(name: str) -> str:
    if not isinstance(name, str):
        raise Unprocessable("a collection name must be a string")
    name = name.strip()
    if not 1 <= len(name) <= MAX_NAME_CHARS:
        raise Unprocessable(f"a collection name must be 1 to {MAX_NAME_CHARS} characters")
    if any(unicodedata.category(c)[0] == "C" for c in name):
        raise Unprocessable("a collection name must not contain control characters")
    return name


class CollectionService:
    def __init__(self, session: AsyncSession, gate: IngestionGate | None = None) -> None:
        self._session = session
        self._gate = gate or IngestionGate(0, 0)

    # --- reads ---------------------------------------------------------------------------

    async def list(self, access: Access) -> list[CollectionView]:
        """The default collection, the caller's other personal collections, then each
        organization's, by name."""
        counts = {(owner, collection): count for owner, collection, count in (await self._session.execute(
            scoped(select(Document.owner, Document.collection_id, func.count())
                   .group_by(Document.owner, Document.collection_id), access, Document)
        )).all()}
        rows = (await self._session.scalars(scoped(select(Collection), access, Collection))).all()
        await self._session.commit()
        default = CollectionView(
            id=DEFAULT_COLLECTION, name=DEFAULT_COLLECTION_NAME, owner=access.user_id, role=OrgRole.OWNER,
            can_write=True, is_default=True, document_count=counts.get((access.user_id, DEFAULT_COLLECTION), 0),
            created_at=None,
        )
        views = [self._view(access, row, counts.get((row.owner, row.id), 0)) for row in rows]
        order = {owner: position for position, owner in enumerate(access.readable_owners)}
        return [default, *sorted(views, key=lambda v: (order.get(v.owner, len(order)), v.name.casefold(), v.id))]

    async def get(self, access: Access, collection_id: str) -> CollectionView:
        if collection_id == DEFAULT_COLLECTION:
            return next(view for view in await self.list(access) if view.is_default)
        row = await self._readable(access, collection_id)
        count = await self._session.scalar(scoped(
            select(func.count()).select_from(Document).where(Document.collection_id == row.id), access, Document))
        await self._session.commit()
        return self._view(access, row, count or 0)

    async def writable_owner(self, access: Access, collection_id: str) -> str:
        """The owner key of a collection the caller may add documents to; 404 / 403 otherwise."""
        if collection_id == DEFAULT_COLLECTION:
            return access.user_id
        row = await self._readable(access, collection_id)
        # Ends the read: callers go on to extract files or wait for an ingestion slot, and
        # must not hold a pooled connection meanwhile.
        await self._session.commit()
        if not access.can_write(row.owner):
            raise insufficient_role("adding documents to this collection")
        return row.owner

    async def ensure_writable(self, access: Access, collection_id: str, owner: str) -> None:
        """Inside a transaction holding the collection's lock (storage/locks.py), before adding a
        document: 404 if the collection was deleted meanwhile (or moved out of reach)."""
        if collection_id == DEFAULT_COLLECTION:
            return
        found = await self._session.scalar(scoped(
            select(Collection.id).where(Collection.id == collection_id, Collection.owner == owner),
            access, Collection, write=True))
        if found is None:
            raise NotFound("collection not found")

    # --- writes --------------------------------------------------------------------------

    async def create(self, access: Access, name: str, organization_id: str | None = None) -> CollectionView:
        name = checked_name(name)
        if organization_id is None:
            owner = access.user_id
        else:
            owner = org_owner(organization_id)
            if not access.can_read(owner):
                raise NotFound("organization not found (or not in your access token yet)")
            if not access.can_write(owner):
                raise insufficient_role("creating collections in this organization")
        async with collection_lock(self._session, self._gate.locks, owner):  # the per-owner limit
            count = await self._session.scalar(scoped(
                select(func.count()).select_from(Collection).where(Collection.owner == owner), access, Collection))
            if (count or 0) >= MAX_COLLECTIONS_PER_OWNER:
                await self._session.rollback()
                raise Conflict(f"an owner can have at most {MAX_COLLECTIONS_PER_OWNER} collections",
                               code="collection_limit")
            row = Collection(owner=owner, name=name, created_by=access.user_id)
            self._session.add(row)
            try:
                await self._session.commit()
            except IntegrityError:
                await self._session.rollback()
                raise Conflict(f"a collection named {name!r} exists already", code="collection_exists") from None
        return self._view(access, row, 0)

    async def rename(self, access: Access, collection_id: str, name: str) -> CollectionView:
        if collection_id == DEFAULT_COLLECTION:
            raise Unprocessable("the default collection cannot be renamed")
        name = checked_name(name)
        try:
            result = await self._session.execute(scoped(
                update(Collection).where(Collection.id == collection_id).values(name=name, updated_at=utcnow()),
                access, Collection, write=True))
            await self._session.commit()
        except IntegrityError:
            await self._session.rollback()
            raise Conflict(f"a collection named {name!r} exists already", code="collection_exists") from None
        if result.rowcount != 1:
            await self._refuse_write(access, collection_id, "renaming this collection")
        return await self.get(access, collection_id)

    async def delete(self, access: Access, collection_id: str) -> None:
        """Delete an empty collection; 409 `collection_not_empty` while it holds documents."""
        if collection_id == DEFAULT_COLLECTION:
            raise Unprocessable("the default collection cannot be deleted")
        row = await self._readable(access, collection_id)
        if not access.can_write(row.owner):
            raise insufficient_role("deleting this collection")
        async with collection_lock(self._session, self._gate.locks, collection_id):
            held = await self._session.scalar(scoped(
                select(func.count()).select_from(Document).where(Document.collection_id == collection_id),
                access, Document))
            if held:
                await self._session.rollback()
                raise Conflict(f"the collection holds {held} documents: move or delete them first",
                               code="collection_not_empty")
            await self._session.execute(scoped(delete(Collection).where(Collection.id == collection_id),
                                               access, Collection, write=True))
            await self._session.commit()

    # --- helpers -------------------------------------------------------------------------

    async def _readable(self, access: Access, collection_id: str) -> Collection:
        row = (await self._session.scalars(
            scoped(select(Collection).where(Collection.id == collection_id), access, Collection)
        )).first()
        if row is None:
            raise NotFound("collection not found")
        return row

    async def _refuse_write(self, access: Access, collection_id: str, what: str) -> None:
        await self._readable(access, collection_id)  # 404 when it cannot even be read
        raise insufficient_role(what)

    @staticmethod
    def _view(access: Access, row: Collection, count: int) -> CollectionView:
        # Rows come from statements scoped to the caller's owners, so it has a role there.
        role = access.role_for(row.owner) or OrgRole.MEMBER
        return CollectionView(id=row.id, name=row.name, owner=row.owner, role=role,
                              can_write=access.can_write(row.owner), is_default=False,
                              document_count=count, created_at=row.created_at)
