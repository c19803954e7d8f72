"""What the MCP tools return (agents/mcp_server.py): each model is a tool's output schema,
so agents see the fields they get."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class SearchHit(BaseModel):
    document_id: str
    title: str
    chunk_index: int
    text: str
    score: float
    metadata: dict[str, Any]


class SearchOutput(BaseModel):
    results: list[SearchHit]


class AskSource(BaseModel):
    number: int = Field(description="Cited as [number] in the answer")
    document_id: str
    title: str
    chunk_index: int
    snippet: str


class AskOutput(BaseModel):
    answer: str = Field(description="The answer; [n] cites sources[n-1], [n, m] two sources saying the same")
    sources: list[AskSource]
    conversation_id: str


class DocumentOut(BaseModel):
    id: str
    title: str
    status: str
    chunk_count: int
    collection_id: str
    organization_id: str | None
    metadata: dict[str, Any]
    created_at: str


class DocumentListOutput(BaseModel):
    documents: list[DocumentOut]
    total: int
    page: int
    pages: int


class DocumentOutput(DocumentOut):
    content: str
    content_chars: int = Field(description="Length of the whole text")
    truncated: bool = Field(description="True when `content` is only the first max_chars characters")


class SaveOutput(BaseModel):
    document_id: str
    created: bool = Field(description="False when the same text already existed (that document is returned)")
    status: str
    message: str


class CollectionItem(BaseModel):
    id: str
    name: str
    organization_id: str | None
    role: str
    can_write: bool
    is_default: bool
    document_count: int


class CollectionsOutput(BaseModel):
    collections: list[CollectionItem]
