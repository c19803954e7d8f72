"""Request and response bodies of `POST /embed`."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class EmbedRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # The upper bound is Settings.max_embed_chars (checked by the service: 413).
    text: str = Field(min_length=1, description="Text to embed as a query")


class EmbedResponse(BaseModel):
    embedding: list[float]
    success: bool = True
