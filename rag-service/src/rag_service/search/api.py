"""`POST /search`: hybrid (default), dense or keyword search over the caller's documents."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from rag_service.deps import (
    AccessDep,
    CostlyRateLimit,
    EmbedderDep,
    SettingsDep,
    SparseEncoderDep,
    VectorStoreDep,
)
from rag_service.search.schemas import SearchRequest, SearchResponse, SearchResultItem
from rag_service.search.service import SearchService

router = APIRouter(tags=["search"])


async def get_search_service(
    vector_store: VectorStoreDep,
    sparse_encoder: SparseEncoderDep,
    embedder: EmbedderDep,
    settings: SettingsDep,
) -> SearchService:
    return SearchService(vector_store, sparse_encoder, embedder, settings)


SearchServiceDep = Annotated[SearchService, Depends(get_search_service)]


@router.post("/search", response_model=SearchResponse, dependencies=[CostlyRateLimit])
async def search(request: SearchRequest, access: AccessDep, service: SearchServiceDep) -> SearchResponse:
    result = await service.search(
        access,
        request.query,
        top_k=request.top_k,
        filters=request.filters,
        mode=request.mode,
        min_score=request.min_score,
        include_embedding=request.include_embedding,
    )
    return SearchResponse(
        results=[
            SearchResultItem(
                document_id=hit.document_id,
                title=hit.title,
                chunk_index=hit.chunk_index,
                text=hit.text,
                score=hit.score,
                metadata=hit.metadata,
                start=hit.start,
                end=hit.end,
            )
            for hit in result.hits
        ],
        query_embedding=result.query_embedding,
    )
