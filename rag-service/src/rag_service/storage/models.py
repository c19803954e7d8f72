"""SQL tables owned by the rag-service. Users and organizations live in the auth-service;
`user_id` is the JWT `sub` (a string), `owner` an owner key (a user id, or `org:<id>` for an
organization: storage/access.py), and every statement on these tables is scoped to the
caller's `Access`.

Schema changes go through Alembic (`storage/migrations`); keep these models and the
migrations in step (a test compares them).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def new_id() -> str:
    return str(uuid.uuid4())


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _uploader(context: Any) -> str:
    """A document inserted without an owner is its uploader's (in its default collection)."""
    return context.get_current_parameters()["user_id"]


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, datetime: DateTime(timezone=True)}


class DocumentStatus:
    INDEXING = "indexing"
    READY = "ready"
    FAILED = "failed"
    # Being deleted: its vectors are being removed, then the row goes.
    DELETING = "deleting"


# Every user's default personal collection: not a row, the same id for everyone (it is
# always read together with its owner). Documents saved without a collection go there.
DEFAULT_COLLECTION = "personal"


class Collection(Base):
    """A named set of documents owned by a user or an organization (its `owner` key)."""

    __tablename__ = "collections"
    __table_args__ = (UniqueConstraint("owner", "name", name="uq_collections_owner_name"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    owner: Mapped[str] = mapped_column(String(255), nullable=False)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    created_by: Mapped[str] = mapped_column(String(255), nullable=False)
    created_at: Mapped[datetime] = mapped_column(nullable=False, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(nullable=False, default=utcnow, onupdate=utcnow)


class Document(Base):
    __tablename__ = "documents"
    __table_args__ = (
        # Saving the same content into the same collection again returns the first document.
        UniqueConstraint("owner", "collection_id", "content_hash", name="uq_documents_collection_hash"),
        Index("ix_documents_owner_created", "owner", "created_at"),
        Index("ix_documents_user_created", "user_id", "created_at"),
        Index("ix_documents_collection", "collection_id"),
        Index("ix_documents_status", "status"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    # Who saved it: quotas count a user's uploads wherever they are.
    user_id: Mapped[str] = mapped_column(String(255), nullable=False)
    # Its collection's owner key: who may read and change it (storage/access.py).
    owner: Mapped[str] = mapped_column(String(255), nullable=False, default=_uploader)
    collection_id: Mapped[str] = mapped_column(String(36), nullable=False, default=DEFAULT_COLLECTION,
                                               server_default=DEFAULT_COLLECTION)
    title: Mapped[str] = mapped_column(String(500), nullable=False)
    content: Mapped[str] = mapped_column(Text, nullable=False)
    content_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    source_name: Mapped[str | None] = mapped_column(String(500))
    mime_type: Mapped[str] = mapped_column(String(100), nullable=False, default="text/plain")
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, nullable=False, default=dict)
    status: Mapped[str] = mapped_column(String(20), nullable=False, default=DocumentStatus.INDEXING)
    error: Mapped[str | None] = mapped_column(Text)
    chunk_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    # len(content), summed for the per-user character quota without reading the content.
    content_chars: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    # Ingestion claim (documents/claims.py): every claim increments the generation; a run's
    # final change must match it. claimed_at is the claim's heartbeat (stale after a lease).
    generation: Mapped[int] = mapped_column(Integer, nullable=False, default=1, server_default="0")
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(nullable=False, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(nullable=False, default=utcnow, onupdate=utcnow)


class Conversation(Base):
    __tablename__ = "conversations"
    __table_args__ = (Index("ix_conversations_user_updated", "user_id", "updated_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(String(255), nullable=False)
    title: Mapped[str] = mapped_column(String(200), nullable=False)
    created_at: Mapped[datetime] = mapped_column(nullable=False, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(nullable=False, default=utcnow, onupdate=utcnow)

    messages: Mapped[list[Message]] = relationship(
        back_populates="conversation",
        cascade="all, delete-orphan",
        order_by="Message.position",
    )


class MessageRole:
    USER = "user"
    ASSISTANT = "assistant"


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("conversation_id", "position", name="uq_messages_position"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    conversation_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("conversations.id", ondelete="CASCADE"), nullable=False
    )
    user_id: Mapped[str] = mapped_column(String(255), nullable=False)
    position: Mapped[int] = mapped_column(Integer, nullable=False)
    role: Mapped[str] = mapped_column(String(20), nullable=False)
    content: Mapped[str] = mapped_column(Text, nullable=False)
    # Assistant messages: [{number, document_id, title, chunk_index, score, snippet}]
    sources: Mapped[list[dict[str, Any]]] = mapped_column(JSON, nullable=False, default=list)
    # "complete" | "incomplete" (client went away mid-stream) | "failed" (provider error)
    status: Mapped[str] = mapped_column(String(20), nullable=False, default="complete")
    # Completed assistant answers: what the chat response said (chat/schemas.py
    # `AnswerOutcome`); None on user messages, unfinished answers and older rows.
    answer_found: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    generator: Mapped[str | None] = mapped_column(String(255), nullable=True)
    created_at: Mapped[datetime] = mapped_column(nullable=False, default=utcnow)

    conversation: Mapped[Conversation] = relationship(back_populates="messages")


class AccountEventsCursor(Base):
    """Where a consumer of the auth-service's account events feed stands (accounts/consumer.py):
    the cursor after the last event it applied (None: from the oldest retained event). Holds
    no user or organization id."""

    __tablename__ = "account_events_cursor"

    consumer: Mapped[str] = mapped_column(String(64), primary_key=True)
    cursor: Mapped[str | None] = mapped_column(String(255))
    # Events applied by this consumer since the row was made (for operators).
    applied: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    updated_at: Mapped[datetime] = mapped_column(nullable=False, default=utcnow)
