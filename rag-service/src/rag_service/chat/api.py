"""`POST /chat`: a cited answer from the caller's documents, as JSON or Server-Sent Events."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sse_starlette import EventSourceResponse

from rag_service.chat.schemas import ChatRequest, ChatResponse
from rag_service.chat.service import ChatService
from rag_service.chat.sse import chat_sse
from rag_service.chat.turns import ChatTurns
from rag_service.deps import (
    AccessDep,
    CostlyRateLimit,
    EmbedderDep,
    GeneratorDep,
    IngestionGateDep,
    SessionmakerDep,
    SettingsDep,
    SparseEncoderDep,
    VectorStoreDep,
)
from rag_service.errors import error_responses
from rag_service.observability import request_id_from
from rag_service.search.service import SearchService

router = APIRouter(tags=["chat"])


async def get_chat_service(vector_store: VectorStoreDep, sparse_encoder: SparseEncoderDep, embedder: EmbedderDep,
                           generator: GeneratorDep, sessionmaker: SessionmakerDep, settings: SettingsDep,
                           gate: IngestionGateDep) -> ChatService:
    return ChatService(
        search=SearchService(vector_store, sparse_encoder, embedder, settings),
        generator=generator,
        turns=ChatTurns(sessionmaker, max_history_turns=settings.max_history_turns,
                        max_history_characters=settings.quota_max_history_characters,
                        locks=gate.locks if gate is not None else None),
        max_query_chars=settings.max_query_chars,
        max_history_turns=settings.max_history_turns,
        max_answer_chars=settings.max_answer_chars,
    )


ChatServiceDep = Annotated[ChatService, Depends(get_chat_service)]

_SSE_DESCRIPTION = (
    "With `stream: true` (or no `stream` and `Accept: text/event-stream`): events `sources`, "
    "`delta` (repeated), then `done`, or `error` as the last event if the answer provider fails "
    "(`{\"error\": {\"code\", \"message\", \"request_id\"}, \"conversation_id\", \"message_id\"}`, "
    "the JSON errors' envelope)."
)


def wants_event_stream(body: ChatRequest, request: Request) -> bool:
    if body.stream is not None:
        return body.stream
    return "text/event-stream" in request.headers.get("accept", "").lower()


@router.post(
    "/chat",
    response_model=ChatResponse,
    dependencies=[CostlyRateLimit],
    responses={200: {"description": _SSE_DESCRIPTION, "content": {"text/event-stream": {}}},
               **error_responses(404, 409)},
)
async def chat(body: ChatRequest, request: Request, access: AccessDep,
               service: ChatServiceDep) -> ChatResponse | Response:
    # Validation, the conversation check (404) and retrieval happen before any byte is
    # sent, so those failures are ordinary JSON errors even when streaming was asked for.
    prepared = await service.prepare(access, body.as_input())
    if wants_event_stream(body, request):
        return EventSourceResponse(chat_sse(prepared, service.events(prepared), request_id_from(request.scope)))
    return ChatResponse.of(await service.collect(prepared))
