"""Server-Sent Events of POST /chat (stream) -> typed events; an `error` event raises."""

from __future__ import annotations

import json

from rag_client.errors import RagError, ServiceUnavailable
from rag_client.models import ChatEvent, DeltaEvent, DoneEvent, SourcesEvent, sources_from


def parse_event(name: str, data: str) -> ChatEvent | None:
    """One SSE event -> a ChatEvent; None for events this client does not know (forward compatible)."""
    payload = json.loads(data) if data else {}
    if name == "sources":
        return SourcesEvent(sources=sources_from(payload["sources"]), conversation_id=payload["conversation_id"],
                            message_id=payload["message_id"], context_used=payload.get("context_used", []))
    if name == "delta":
        return DeltaEvent(payload["text"])
    if name == "done":
        return DoneEvent(payload["conversation_id"], payload["message_id"], payload.get("timing", {}),
                         answer_found=payload.get("answer_found", True), generator=payload.get("generator", ""),
                         cited_sources=payload.get("cited_sources", []))
    if name == "error":
        # {"error": {"code", "message", "request_id"}, ...}: the JSON errors' envelope.
        error = payload.get("error") if isinstance(payload.get("error"), dict) else {}
        code = error.get("code", "stream_error")
        kind = ServiceUnavailable if code in ("provider_unavailable", "internal_error") else RagError
        raise kind(200, code, error.get("message", "the answer stream failed"), request_id=error.get("request_id"))
    return None
