"""Python client for the rag-service: `RagClient` (sync), `AsyncRagClient`, typed results,
errors carrying the service's code. See clients/python/README.md."""

from rag_client.aio import AsyncRagClient
from rag_client.client import RagClient
from rag_client.errors import (
    AuthenticationError,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    RagError,
    RateLimited,
    ServiceUnavailable,
)
from rag_client.models import (
    ApiKey,
    BatchFile,
    BatchItemResult,
    BatchResult,
    BatchText,
    ChatAnswer,
    ChatEvent,
    Collection,
    DeltaEvent,
    Document,
    DocumentPage,
    DoneEvent,
    IngestionSummary,
    OwnerUsage,
    SavedDocument,
    SearchHit,
    Source,
    SourcesEvent,
    UploadedDocument,
)

__all__ = [
    "ApiKey", "AsyncRagClient", "BatchFile", "BatchItemResult", "BatchResult", "BatchText", "AuthenticationError", "ChatAnswer", "ChatEvent", "Collection", "DeltaEvent", "Document",
    "DocumentPage", "DoneEvent", "IngestionSummary", "InvalidRequest", "NotFound", "OwnerUsage", "PermissionDenied",
    "RagClient", "RagError", "RateLimited", "SavedDocument", "SearchHit", "ServiceUnavailable", "Source",
    "SourcesEvent", "UploadedDocument",
]
