"""`GET/POST /collections`, `GET/PATCH/DELETE /collections/{collection_id}`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Response, status

from rag_service.collections.records import MAX_COLLECTION_ID_CHARS
from rag_service.collections.schemas import (
    CollectionList,
    CollectionOut,
    CreateCollectionRequest,
    RenameCollectionRequest,
)
from rag_service.collections.service import CollectionService
from rag_service.deps import AccessDep, CheapRateLimit, IngestionGateDep, SessionDep, WriteScope
from rag_service.errors import error_responses

router = APIRouter(tags=["collections"])

CollectionId = Annotated[str, Path(min_length=1, max_length=MAX_COLLECTION_ID_CHARS)]


async def get_collection_service(session: SessionDep, gate: IngestionGateDep) -> CollectionService:
    return CollectionService(session, gate)


CollectionServiceDep = Annotated[CollectionService, Depends(get_collection_service)]


@router.get("/collections", response_model=CollectionList, dependencies=[CheapRateLimit])
async def list_collections(access: AccessDep, collections: CollectionServiceDep) -> CollectionList:
    """Every collection the caller can read: its default one, its other personal ones, then
    those of the organizations in its access token."""
    return CollectionList(collections=[CollectionOut.of(view) for view in await collections.list(access)])


@router.post("/collections", response_model=CollectionOut, status_code=status.HTTP_201_CREATED,
             dependencies=[WriteScope, CheapRateLimit], responses=error_responses(403, 404, 409))
async def create_collection(body: CreateCollectionRequest, access: AccessDep,
                            collections: CollectionServiceDep) -> CollectionOut:
    """A personal collection, or one of an organization where the caller is admin or owner
    (403 `insufficient_role` for a member). 409 `collection_exists` for a name taken."""
    return CollectionOut.of(await collections.create(access, body.name, body.organization_id))


@router.get("/collections/{collection_id}", response_model=CollectionOut, dependencies=[CheapRateLimit],
            responses=error_responses(404))
async def get_collection(collection_id: CollectionId, access: AccessDep,
                         collections: CollectionServiceDep) -> CollectionOut:
    return CollectionOut.of(await collections.get(access, collection_id))


@router.patch("/collections/{collection_id}", response_model=CollectionOut,
              dependencies=[WriteScope, CheapRateLimit], responses=error_responses(403, 404, 409))
async def rename_collection(collection_id: CollectionId, body: RenameCollectionRequest, access: AccessDep,
                            collections: CollectionServiceDep) -> CollectionOut:
    return CollectionOut.of(await collections.rename(access, collection_id, body.name))


@router.delete("/collections/{collection_id}", status_code=status.HTTP_204_NO_CONTENT,
               dependencies=[WriteScope, CheapRateLimit], responses=error_responses(403, 404, 409))
async def delete_collection(collection_id: CollectionId, access: AccessDep,
                            collections: CollectionServiceDep) -> Response:
    """Only an empty collection: 409 `collection_not_empty` while it holds documents."""
    await collections.delete(access, collection_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
