"""HTTP routes for documents: thin wrappers over `DocumentService`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Query, Response, UploadFile, status

from rag_service.deps import (
    CheapRateLimit,
    CostlyRateLimit,
    EmbedderDep,
    ExtractionPoolDep,
    IngestionGateDep,
    SessionDep,
    SettingsDep,
    SparseEncoderDep,
    UserDep,
    VectorStoreDep,
    WriteScope,
)
from rag_service.documents.schemas import (
    DeleteResponse,
    DocumentDetail,
    DocumentList,
    DocumentSummary,
    EmbedRequest,
    EmbedResponse,
    IngestionSummary,
    SaveDocumentRequest,
    SaveDocumentResponse,
    UploadedDocument,
    UploadResponse,
    save_message,
)
from rag_service.documents.service import DocumentService
from rag_service.documents.upload import UploadedFile, check_upload_count, store_uploads
from rag_service.documents.validation import parse_metadata_json
from rag_service.errors import error_responses

router = APIRouter(tags=["documents"])

# Pages beyond this are refused (422) rather than turned into absurd SQL offsets.
MAX_PAGE = 1_000_000


async def get_document_service(
    session: SessionDep,
    vector_store: VectorStoreDep,
    sparse_encoder: SparseEncoderDep,
    embedder: EmbedderDep,
    settings: SettingsDep,
    gate: IngestionGateDep,
) -> DocumentService:
    return DocumentService(session, vector_store, sparse_encoder, embedder, settings, gate=gate,
                           ingest_batch=settings.ingest_batch_size)


DocumentServiceDep = Annotated[DocumentService, Depends(get_document_service)]


@router.post("/embed", response_model=EmbedResponse, dependencies=[WriteScope, CostlyRateLimit])
async def embed(body: EmbedRequest, user: UserDep, service: DocumentServiceDep) -> EmbedResponse:
    return EmbedResponse(embedding=await service.embed_query(body.text))


@router.post(
    "/save-document",
    response_model=SaveDocumentResponse,
    status_code=status.HTTP_201_CREATED,
    dependencies=[WriteScope, CostlyRateLimit],
    responses={200: {"model": SaveDocumentResponse, "description": "The same content already exists"},
               **error_responses(409)},
)
async def save_document(
    body: SaveDocumentRequest, user: UserDep, service: DocumentServiceDep, response: Response
) -> SaveDocumentResponse:
    document, created = await service.save(user.id, body.title, body.content, body.metadata)
    if not created:
        response.status_code = status.HTTP_200_OK
    return SaveDocumentResponse(document_id=document.id, message=save_message(document, created))


@router.post(
    "/documents/upload",
    response_model=UploadResponse,
    status_code=status.HTTP_201_CREATED,
    dependencies=[WriteScope, CostlyRateLimit],
    responses={200: {"model": UploadResponse, "description": "Every file already existed"},
               **error_responses(409, 413, 415, 422)},
)
async def upload_documents(
    files: Annotated[list[UploadFile], File(description="One or more .txt, .md, .html, .pdf or .docx files")],
    user: UserDep,
    service: DocumentServiceDep,
    pool: ExtractionPoolDep,
    settings: SettingsDep,
    response: Response,
    title: Annotated[str | None, Form(description="Title (only with a single file)")] = None,
    metadata: Annotated[str | None, Form(description="JSON object applied to every file")] = None,
) -> UploadResponse:
    check_upload_count(len(files), title, settings.max_files_per_upload)
    parsed_metadata = parse_metadata_json(metadata, settings)
    received = []
    for upload in files:
        # One byte over the limit is enough to refuse the file without reading all of it.
        received.append(UploadedFile(upload.filename, await upload.read(settings.max_upload_bytes + 1)))
    stored = await store_uploads(service, pool, user.id, received, settings, title=title, metadata=parsed_metadata)
    results = []
    for item in stored:
        results.append(UploadedDocument(
            document_id=item.document.id, title=item.document.title, created=item.created,
            message=save_message(item.document, item.created),
        ))
    if not any(result.created for result in results):
        response.status_code = status.HTTP_200_OK
    return UploadResponse(documents=results)


@router.get("/documents", response_model=DocumentList, dependencies=[CheapRateLimit])
async def list_documents(
    user: UserDep,
    service: DocumentServiceDep,
    page: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 1,
    limit: Annotated[int, Query(ge=1, description="At most Settings.max_page_size")] = 20,
) -> DocumentList:
    result = await service.list(user.id, page=page, limit=limit)
    return DocumentList(
        documents=[DocumentSummary.of(d) for d in result.documents],
        total=result.total, page=result.page, pages=result.pages,
    )


# Declared before /documents/{document_id}, which would otherwise take "summary" for an id.
@router.get("/documents/summary", response_model=IngestionSummary, dependencies=[CheapRateLimit])
async def documents_summary(user: UserDep, service: DocumentServiceDep) -> IngestionSummary:
    """The caller's documents by status, chunks and bytes stored, and usage against the quotas."""
    return IngestionSummary.of(await service.summary(user.id))


@router.get("/documents/{document_id}", response_model=DocumentDetail, dependencies=[CheapRateLimit],
            responses=error_responses(404))
async def get_document(document_id: str, user: UserDep, service: DocumentServiceDep) -> DocumentDetail:
    return DocumentDetail.of(await service.get(user.id, document_id))


@router.delete("/documents/{document_id}", response_model=DeleteResponse, dependencies=[WriteScope, CheapRateLimit],
               responses=error_responses(404))
async def delete_document(document_id: str, user: UserDep, service: DocumentServiceDep) -> DeleteResponse:
    await service.delete(user.id, document_id)
    return DeleteResponse(document_id=document_id)
