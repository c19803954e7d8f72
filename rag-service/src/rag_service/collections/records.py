"""What the collections service answers with, and the bounds of a collection's id and name
(the routes' schemas check them too)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from rag_service.core.roles import OrgRole
from rag_service.storage.access import org_of

# "personal" or a collection's UUID.
MAX_COLLECTION_ID_CHARS = 36
MAX_NAME_CHARS = 100


@dataclass(frozen=True)
class CollectionView:
    """A collection as the caller sees it."""

    id: str
    name: str
    owner: str
    role: OrgRole
    can_write: bool
    is_default: bool
    document_count: int
    created_at: datetime | None

    @property
    def organization_id(self) -> str | None:
        return org_of(self.owner)
