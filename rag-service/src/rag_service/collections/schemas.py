"""Request and response bodies of the collections routes."""

from __future__ import annotations

from datetime import datetime, timezone

from pydantic import BaseModel, ConfigDict, Field, field_serializer

from rag_service.collections.records import MAX_COLLECTION_ID_CHARS, MAX_NAME_CHARS, CollectionView


class CreateCollectionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=MAX_NAME_CHARS)
    organization_id: str | None = Field(
        default=None, min_length=1, max_length=64,
        description="Create it in this organization (admins and owners); default: a personal collection",
    )


class RenameCollectionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=MAX_NAME_CHARS)


class CollectionOut(BaseModel):
    id: str = Field(description='"personal" (the default collection) or a UUID', max_length=MAX_COLLECTION_ID_CHARS)
    name: str
    organization_id: str | None = Field(description="The owning organization; null: the caller's own")
    role: str = Field(description="The caller's role over it: owner (its own), or its role in the organization")
    can_write: bool = Field(description="Whether the caller may add, move and delete its documents")
    is_default: bool
    document_count: int = Field(description="Documents in it, whatever their status")
    created_at: datetime | None

    @field_serializer("created_at")
    def _as_utc(self, moment: datetime | None) -> str | None:
        if moment is None:
            return None
        # SQLite hands back naive datetimes (stored in UTC); RFC 3339 needs the offset.
        aware = moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)
        return aware.isoformat()

    @classmethod
    def of(cls, view: CollectionView) -> CollectionOut:
        return cls(id=view.id, name=view.name, organization_id=view.organization_id, role=view.role.value,
                   can_write=view.can_write, is_default=view.is_default, document_count=view.document_count,
                   created_at=view.created_at)


class CollectionList(BaseModel):
    collections: list[CollectionOut]
