"""Chat events as Server-Sent Events: `sources`, `delta`..., then `done` or `error`.

Every `data` field is one JSON object, so answer text with newlines travels safely:
- `sources`: {"sources": [{number, document_id, title, chunk_index, score, snippet}],
              "context_used": [...], "conversation_id", "message_id"}
- `delta`:   {"text": "..."}
- `done`:    {"conversation_id", "message_id", "status": "complete",
              "answer_found": bool, "generator": "extractive" | "<provider>:<model>",
              "cited_sources": [n, ...],
              "timing": {"retrieval_ms", "first_delta_ms", "total_ms"}}
- `error`:   {"code", "message", "conversation_id", "message_id"}   (last event; e.g.
             code "provider_unavailable" when the answer provider failed)
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import asdict

from sse_starlette import ServerSentEvent

from rag_service.chat.records import ChatEvent, DeltaEvent, DoneEvent, SourcesEvent
from rag_service.chat.schemas import ChatDone, ChatError
from rag_service.chat.service import PreparedChat
from rag_service.errors import AppError

log = logging.getLogger(__name__)


def _event(name: str, payload: object) -> ServerSentEvent:
    return ServerSentEvent(event=name, data=json.dumps(payload, ensure_ascii=False))


def _without_cited(source: dict) -> dict:
    source.pop("cited", None)
    return source


async def chat_sse(prepared: PreparedChat, events: AsyncIterator[ChatEvent]) -> AsyncIterator[ServerSentEvent]:
    turn = prepared.turn
    async with aclosing(events):
        try:
            async for event in events:
                if isinstance(event, SourcesEvent):
                    yield _event("sources", {
                        # Which sources the answer cites is known at `done` (cited_sources).
                        "sources": [_without_cited(asdict(source)) for source in event.sources],
                        "context_used": prepared.context_used,
                        "conversation_id": turn.conversation_id,
                        "message_id": turn.assistant_message_id,
                    })
                elif isinstance(event, DeltaEvent):
                    yield _event("delta", {"text": event.text})
                elif isinstance(event, DoneEvent):
                    yield _event("done", ChatDone.of(event).model_dump())
        except AppError as exc:
            # The response has started (status 200): the failure travels as the last event.
            yield _event("error", ChatError(code=exc.code, message=exc.message,
                                            conversation_id=turn.conversation_id,
                                            message_id=turn.assistant_message_id).model_dump())
        except Exception:
            log.exception("chat stream failed (conversation %s)", turn.conversation_id)
            yield _event("error", ChatError(code="internal_error", message="internal server error",
                                            conversation_id=turn.conversation_id,
                                            message_id=turn.assistant_message_id).model_dump())
