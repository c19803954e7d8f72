"""HTTP routes for documents: thin wrappers over `DocumentService`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Query, Response, UploadFile, status

from rag_service.deps import (
    CheapRateLimit,
    CostlyRateLimit,
    EmbedderDep,
    SessionDep,
    SettingsDep,
    SparseEncoderDep,
    UserDep,
    VectorStoreDep,
    WriteScope,
)
from rag_service.documents.extraction import ExtractedFile, extract
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
from rag_service.documents.validation import parse_metadata_json, validate_title
from rag_service.errors import PayloadTooLarge, Unprocessable, error_responses

router = APIRouter(tags=["documents"])

# Pages beyond this are refused (422) rather than turned into absurd SQL offsets.
MAX_PAGE = 1_000_000


def get_document_service(
    session: SessionDep,
    vector_store: VectorStoreDep,
    sparse_encoder: SparseEncoderDep,
    embedder: EmbedderDep,
    settings: SettingsDep,
) -> DocumentService:
    return DocumentService(session, vector_store, sparse_encoder, embedder, settings)


DocumentServiceDep = Annotated[DocumentService, Depends(get_document_service)]


@router.post("/embed", response_model=EmbedResponse, dependencies=[WriteScope, CostlyRateLimit])
async def embed(body: EmbedRequest, user: UserDep, service: DocumentServiceDep) -> EmbedResponse:
    return EmbedResponse(embedding=await service.embed_query(body.text))


@router.post(
    "/save-document",
    response_model=SaveDocumentResponse,
    status_code=status.HTTP_201_CREATED,
    dependencies=[WriteScope, CostlyRateLimit],
    responses={200: {"model": SaveDocumentResponse, "description": "The same content already exists"}},
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
    responses={200: {"model": UploadResponse, "description": "Every file already existed"}, **error_responses(415)},
)
async def upload_documents(
    files: Annotated[list[UploadFile], File(description="One or more .txt, .md, .html, .pdf or .docx files")],
    user: UserDep,
    service: DocumentServiceDep,
    settings: SettingsDep,
    response: Response,
    title: Annotated[str | None, Form(description="Title (only with a single file)")] = None,
    metadata: Annotated[str | None, Form(description="JSON object applied to every file")] = None,
) -> UploadResponse:
    if not files:
        raise Unprocessable("no file uploaded: send one or more files in the `files` field")
    if len(files) > settings.max_files_per_upload:
        raise PayloadTooLarge(f"{len(files)} files uploaded; the limit is {settings.max_files_per_upload} per request")
    if title is not None and len(files) > 1:
        raise Unprocessable("`title` can only be given when uploading a single file")
    parsed_metadata = parse_metadata_json(metadata, settings)

    # Every file is read and checked before any is stored: bad input changes nothing.
    extracted: list[tuple[ExtractedFile, str]] = []
    for upload in files:
        data = await upload.read(settings.max_upload_bytes + 1)
        if len(data) > settings.max_upload_bytes:
            raise PayloadTooLarge(
                f"{upload.filename!r} is larger than the limit of {settings.max_upload_bytes} bytes"
            )
        file = extract(upload.filename, data)
        service.prepare_content(file.content)
        document_title = validate_title(title or file.title or file.source_name, settings)
        extracted.append((file, document_title))

    results = []
    for file, document_title in extracted:
        document, created = await service.save(
            user.id, document_title, file.content, parsed_metadata,
            source_name=file.source_name, mime_type=file.mime_type,
        )
        results.append(UploadedDocument(
            document_id=document.id, title=document.title, created=created,
            message=save_message(document, created),
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
    totals = await service.summary(user.id)
    return IngestionSummary(documents=totals.documents, by_status=totals.by_status, chunks=totals.chunks,
                            bytes=totals.bytes)


@router.get("/documents/{document_id}", response_model=DocumentDetail, dependencies=[CheapRateLimit],
            responses=error_responses(404))
async def get_document(document_id: str, user: UserDep, service: DocumentServiceDep) -> DocumentDetail:
    return DocumentDetail.of(await service.get(user.id, document_id))


@router.delete("/documents/{document_id}", response_model=DeleteResponse, dependencies=[WriteScope, CheapRateLimit],
               responses=error_responses(404))
async def delete_document(document_id: str, user: UserDep, service: DocumentServiceDep) -> DeleteResponse:
    await service.delete(user.id, document_id)
    return DeleteResponse(document_id=document_id)
