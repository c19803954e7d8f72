"""HTTP routes for documents: thin wrappers over `DocumentService` and `DocumentIntake`."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Query, Request, Response, UploadFile, status

from rag_service.deps import (
    CheapRateLimit,
    CostlyRateLimit,
    EmbedderDep,
    ExtractionPoolDep,
    IngestionGateDep,
    RateLimiterDep,
    SessionDep,
    AccessDep,
    SettingsDep,
    SparseEncoderDep,
    VectorStoreDep,
    WriteScope,
)
from rag_service.config import Settings
from rag_service.documents.batch_request import (
    OPENAPI_REQUEST_BODY,
    batch_body_bytes,
    parse_json_batch,
    parse_multipart_batch,
)
from rag_service.documents.intake import DocumentIntake, check_upload_count
from rag_service.documents.records import BatchItem, UploadedFile
from rag_service.documents.schemas import (
    BatchResponse,
    DeleteResponse,
    DocumentDetail,
    DocumentList,
    DocumentSummary,
    COLLECTION_FIELD,
    IngestionSummary,
    MoveDocumentRequest,
    SaveDocumentRequest,
    SaveDocumentResponse,
    UploadResponse,
    save_message,
)
from rag_service.collections.records import MAX_COLLECTION_ID_CHARS
from rag_service.documents.reads import DocumentReads
from rag_service.documents.service import DocumentService
from rag_service.documents.validation import parse_metadata_json
from rag_service.errors import Unprocessable, UnsupportedMediaType, error_responses
from rag_service.storage.models import DEFAULT_COLLECTION

router = APIRouter(tags=["documents"])

# Pages beyond this are refused (422) rather than turned into absurd SQL offsets.
MAX_PAGE = 1_000_000
# Ingestion routes spend bytes of the ingestion budget (in DocumentIntake) and one request
# of the cheap budget; a refused scope spends neither.
INGESTION = [WriteScope, CheapRateLimit]


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


async def get_document_reads(session: SessionDep, settings: SettingsDep) -> DocumentReads:
    return DocumentReads(session, settings)


DocumentReadsDep = Annotated[DocumentReads, Depends(get_document_reads)]


async def get_intake(service: DocumentServiceDep, pool: ExtractionPoolDep, limiter: RateLimiterDep,
               settings: SettingsDep) -> DocumentIntake:
    return DocumentIntake(service, pool, limiter, settings)


IntakeDep = Annotated[DocumentIntake, Depends(get_intake)]


@router.post(
    "/save-document",
    response_model=SaveDocumentResponse,
    status_code=status.HTTP_201_CREATED,
    dependencies=INGESTION,
    responses={200: {"model": SaveDocumentResponse, "description": "The same content already exists"},
               **error_responses(404, 409)},
)
async def save_document(
    body: SaveDocumentRequest, access: AccessDep, intake: IntakeDep, response: Response
) -> SaveDocumentResponse:
    stored = await intake.save(access, body.title, body.content, body.metadata, collection_id=body.collection_id)
    if not stored.created:
        response.status_code = status.HTTP_200_OK
    return SaveDocumentResponse(document_id=stored.document.id, message=save_message(stored.document, stored.created))


@router.post(
    "/documents/upload",
    response_model=UploadResponse,
    status_code=status.HTTP_201_CREATED,
    dependencies=INGESTION,
    responses={200: {"model": UploadResponse, "description": "No file was created (duplicates or refused files)"},
               **error_responses(404, 409, 413, 415, 422)},
)
async def upload_documents(
    files: Annotated[list[UploadFile], File(description="One or more files: .pdf, .docx, .pptx, .xlsx, .odt, .epub, "
                                                        ".html, .md, or text of any name")],
    access: AccessDep,
    intake: IntakeDep,
    settings: SettingsDep,
    response: Response,
    title: Annotated[str | None, Form(description="Title (only with a single file)")] = None,
    metadata: Annotated[str | None, Form(description="JSON object applied to every file")] = None,
    collection_id: Annotated[str, Form(description=COLLECTION_FIELD, max_length=MAX_COLLECTION_ID_CHARS)]
        = DEFAULT_COLLECTION,
) -> UploadResponse:
    """One result per file, in order (`items`, as /documents/batch): a file that is refused
    (unreadable, over a limit or the quota, failed to index) never undoes or blocks the
    others; `documents` lists the files stored. 201 when a file was created, else 200. A
    single file's problem is the request's error (413/415/422); request-level problems
    (no file, too many, bad `metadata`, a `title` with several files) change nothing."""
    check_upload_count(len(files), title, settings.max_files_per_upload)  # before reading any file
    outcomes = await intake.upload(access, await _received(files, settings), title=title,
                                   metadata=parse_metadata_json(metadata, settings), collection_id=collection_id)
    answer = UploadResponse.of(outcomes)
    if not answer.created:
        response.status_code = status.HTTP_200_OK
    return answer


@router.post(
    "/documents/batch",
    response_model=BatchResponse,
    dependencies=INGESTION,
    openapi_extra=OPENAPI_REQUEST_BODY,
    responses=error_responses(404, 413, 415, 422),
)
async def batch_documents(
    request: Request, access: AccessDep, intake: IntakeDep, settings: SettingsDep,
    collection_id: Annotated[str, Query(description=COLLECTION_FIELD + " (every item)",
                                        max_length=MAX_COLLECTION_ID_CHARS)] = DEFAULT_COLLECTION,
) -> BatchResponse:
    """Up to MAX_BATCH_ITEMS documents (MAX_BATCH_BYTES in all) in one request: text items as
    JSON, or files as multipart `files` parts with an optional JSON `manifest` part. Answers
    per item, in order: `created`, `duplicate` (the existing document) or `error` (its code,
    message and status); a bad item never fails the others. Request-level problems (not
    JSON, too many items or bytes, file parts that do not match the manifest) are a 413/422
    and change nothing; a request over what is left of the ingestion budget is a 429."""
    return BatchResponse.of(await intake.batch(access, await _batch_items(request, settings),
                                               collection_id=collection_id))


async def _received(files: list[UploadFile], settings: Settings) -> list[UploadedFile]:
    # One byte over the limit is enough to refuse the file without reading all of it.
    return [UploadedFile(upload.filename, await upload.read(settings.max_upload_bytes + 1)) for upload in files]


async def _batch_items(request: Request, settings: Settings) -> list[BatchItem]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        return await asyncio.to_thread(parse_json_batch, await request.body(), settings)
    if content_type != "multipart/form-data":
        raise UnsupportedMediaType("send the batch as application/json (text items) or multipart/form-data "
                                   "(`files` parts and an optional JSON `manifest` part)")
    # Beyond MAX_BATCH_ITEMS files the intake answers 413; the parser's own cap is far above.
    async with request.form(max_files=settings.max_batch_items + 1000, max_fields=16,
                            max_part_size=batch_body_bytes(settings)) as form:
        unexpected = sorted(set(form.keys()) - {"files", "manifest"})
        if unexpected:
            raise Unprocessable(f"unexpected parts {unexpected[:5]}: send `files` parts and an optional `manifest`")
        files = form.getlist("files")
        if any(isinstance(file, str) for file in files):
            raise Unprocessable("every `files` part must be a file (with a file name)")
        manifests = form.getlist("manifest")
        if len(manifests) > 1:
            raise Unprocessable("send at most one `manifest` part")
        manifest = manifests[0] if manifests else None
        if manifest is not None and not isinstance(manifest, str):
            manifest = await manifest.read()
        received = await _received(files, settings)  # type: ignore[arg-type]
    return await asyncio.to_thread(parse_multipart_batch, manifest, received, settings)


@router.get("/documents", response_model=DocumentList, dependencies=[CheapRateLimit])
async def list_documents(
    access: AccessDep,
    reads: DocumentReadsDep,
    page: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 1,
    limit: Annotated[int, Query(ge=1, description="At most Settings.max_page_size")] = 20,
    collection_id: Annotated[str | None, Query(description="Only this collection's documents",
                                               max_length=MAX_COLLECTION_ID_CHARS)] = None,
) -> DocumentList:
    """The documents the caller may read (personal and its organizations'), newest first."""
    result = await reads.list(access, page=page, limit=limit, collection_id=collection_id)
    return DocumentList(
        documents=[DocumentSummary.of(d) for d in result.documents],
        total=result.total, page=result.page, pages=result.pages,
    )


# Declared before /documents/{document_id}, which would otherwise take "summary" for an id.
@router.get("/documents/summary", response_model=IngestionSummary, dependencies=[CheapRateLimit])
async def documents_summary(access: AccessDep, reads: DocumentReadsDep) -> IngestionSummary:
    """The documents the caller may read by status, chunks and bytes stored, and the
    caller's usage (what it saved) against the quotas."""
    return IngestionSummary.of(await reads.summary(access))


@router.get("/documents/{document_id}", response_model=DocumentDetail, dependencies=[CheapRateLimit],
            responses=error_responses(404))
async def get_document(document_id: str, access: AccessDep, reads: DocumentReadsDep) -> DocumentDetail:
    return DocumentDetail.of(await reads.get(access, document_id))


@router.delete("/documents/{document_id}", response_model=DeleteResponse, dependencies=[WriteScope, CheapRateLimit],
               responses=error_responses(403, 404))
async def delete_document(document_id: str, access: AccessDep, service: DocumentServiceDep) -> DeleteResponse:
    await service.delete(access, document_id)
    return DeleteResponse(document_id=document_id)


@router.post("/documents/{document_id}/move", response_model=DocumentDetail,
             dependencies=[WriteScope, CostlyRateLimit], responses=error_responses(403, 404, 409))
async def move_document(document_id: str, body: MoveDocumentRequest, access: AccessDep,
                        service: DocumentServiceDep) -> DocumentDetail:
    """Put a document into another collection; it is re-indexed there (write access to
    both collections needed). 409 `duplicate_in_collection` when the target holds the same content."""
    return DocumentDetail.of(await service.move(access, document_id, body.collection_id))
