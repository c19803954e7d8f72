"""`POST /embed`: the query embedding of a text (write scope, costly budget)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from rag_service.deps import CostlyRateLimit, EmbedderDep, SettingsDep, UserDep, WriteScope
from rag_service.embeddings.schemas import EmbedRequest, EmbedResponse
from rag_service.embeddings.service import EmbeddingService

# Tagged with the documents routes, where it has always been listed in the OpenAPI document.
router = APIRouter(tags=["documents"])


async def get_embedding_service(embedder: EmbedderDep, settings: SettingsDep) -> EmbeddingService:
    return EmbeddingService(embedder, settings)


EmbeddingServiceDep = Annotated[EmbeddingService, Depends(get_embedding_service)]


@router.post("/embed", response_model=EmbedResponse, dependencies=[WriteScope, CostlyRateLimit])
async def embed(body: EmbedRequest, user: UserDep, service: EmbeddingServiceDep) -> EmbedResponse:
    return EmbedResponse(embedding=await service.embed_query(body.text))
