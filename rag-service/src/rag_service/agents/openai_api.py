"""The OpenAI-compatible API under `/v1`, for the `openai` SDKs, LangChain, LlamaIndex and chat
front-ends (Open WebUI's "OpenAI connection"): `base_url=<rag-service>/v1`, `api_key=<API key>`.

- `GET /v1/models`: the answer mode this service runs: the configured
  generator (`gemini:<model>`, `openai:<model>`), or `extractive` when no model is configured.
- `POST /v1/chat/completions`: the last message is the user's question, earlier user and
  assistant messages are the conversation context (the last `MAX_HISTORY_TURNS`, each cut to
  the chat's per-message limit); system and developer messages are accepted and not used (the
  service's own instructions keep answers to the documents). The answer cites its sources as
  `[n]`; `sources` (an extension field, on the response or the first chunk) lists them, `n`
  being `sources[n-1].number`. Extension fields in the request: `collection` (a collection
  id), `filters` (POST /search's filters) and `top_k`. `stream: true` answers with
  `chat.completion.chunk` Server-Sent Events ending with `data: [DONE]`; `stream_options:
  {"include_usage": true}` adds the usage chunk. Usage is counted with the embedding model's
  tokenizer (the generator's own is not available here): an estimate, not a bill.
  Each completion is saved in the caller's chat history like a POST /chat (`conversation_id`).
- `POST /v1/embeddings`: query embeddings from the service's embedder (write scope, as
  POST /embed).

Same authentication (JWT or API key), scopes, rate limits and access filter as the REST API
(agents/services.py). Errors here, and only here, are OpenAI-shaped:
`{"error": {"message", "type", "param", "code"}}` (main.py renders them for /v1 paths).
"""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Annotated, Any, Literal

from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, StrictStr
from sse_starlette import EventSourceResponse, ServerSentEvent

from rag_service.agents.services import AgentServices
from rag_service.chat.schemas import MAX_HISTORY_MESSAGE_CHARS, ChatRequest, HistoryMessage
from rag_service.chat.service import ChatService, PreparedChat
from rag_service.chat.records import DEFAULT_CHAT_TOP_K, ChatInput, DeltaEvent, SourcesEvent
from rag_service.deps import RuntimeDep, UserDep
from rag_service.errors import AppError, BadRequest, NotFound
from rag_service.runtime import Runtime
from rag_service.search.filters import SearchFilters

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1", tags=["openai-compatible"])

OPENAI_PREFIX = "/v1/"
# Far above any real conversation; a longer list is refused before it is walked.
MAX_MESSAGES = 1_000
MAX_EMBEDDING_INPUTS = 64
USED_ROLES = ("user", "assistant")
IGNORED_ROLES = ("system", "developer")


class Message(BaseModel):
    # Clients send `name` and other fields: accepted and not used.
    model_config = ConfigDict(extra="allow")

    role: StrictStr
    content: StrictStr | list[dict[str, Any]] | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    # OpenAI's sampling options (temperature, max_tokens, n, user, ...) are accepted and not used.
    model_config = ConfigDict(extra="ignore")

    model: StrictStr = Field(min_length=1, max_length=200)
    messages: list[Message] = Field(min_length=1, max_length=MAX_MESSAGES)
    stream: bool = False
    stream_options: StreamOptions | None = None
    # Extensions (send them with the openai SDK's `extra_body`).
    collection: StrictStr | None = Field(default=None, min_length=1, max_length=36,
                                         description='"personal" or a collection id; default: every readable one')
    filters: SearchFilters | None = None
    top_k: int = DEFAULT_CHAT_TOP_K  # 1 to settings.max_chat_top_k, checked by the chat service


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: StrictStr = Field(min_length=1, max_length=200)
    input: StrictStr | Annotated[list[StrictStr], Field(min_length=1, max_length=MAX_EMBEDDING_INPUTS)]
    # The openai SDKs ask for base64 (little-endian float32) and decode it themselves.
    encoding_format: Literal["float", "base64"] = "float"


def openai_error_body(status: int, code: str, message: str, param: str | None = None) -> dict[str, Any]:
    """The OpenAI error shape, for /v1 paths only (main.py)."""
    if status == 401:
        kind = "authentication_error"
    elif status == 403:
        kind = "permission_error"
    elif status == 429:
        kind = "rate_limit_error"
    elif status >= 500:
        kind = "server_error"
    else:
        kind = "invalid_request_error"
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def is_openai_path(path: str) -> bool:
    return path.startswith(OPENAI_PREFIX)


# --- models --------------------------------------------------------------------------------


def model_id(runtime: Runtime) -> str:
    return runtime.generator.name


def _model(runtime: Runtime) -> dict[str, Any]:
    return {"id": model_id(runtime), "object": "model", "created": int(runtime.started_at.timestamp()),
            "owned_by": "rag-service"}


@router.get("/models")
async def list_models(user: UserDep, runtime: RuntimeDep) -> dict[str, Any]:
    await runtime.rate_limiter.hit("cheap", user.id)
    return {"object": "list", "data": [_model(runtime)]}


def _check_model(runtime: Runtime, model: str) -> None:
    if model != model_id(runtime):
        raise NotFound(f"the model {model[:200]!r} does not exist; this service answers with "
                       f"{model_id(runtime)!r} (GET /v1/models)", code="model_not_found")


# --- chat completions ----------------------------------------------------------------------


def _text(message: Message, index: int) -> str:
    if message.content is None:
        raise BadRequest(f"messages[{index}].content is missing", code="invalid_value")
    if isinstance(message.content, str):
        return message.content
    texts = []
    for part in message.content:
        if part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise BadRequest(f"messages[{index}].content: only text parts are supported", code="invalid_value")
        texts.append(part["text"])
    return "".join(texts)


def chat_request(body: ChatCompletionRequest, max_history_turns: int) -> ChatInput:
    """The POST /chat request a completion asks for (validated by its own model and limits)."""
    for index, message in enumerate(body.messages):
        if message.role not in USED_ROLES + IGNORED_ROLES:
            raise BadRequest(f"messages[{index}].role {message.role[:40]!r} is not supported: use user, assistant, "
                             "system or developer (this model calls no tools)", code="invalid_value")
    last = body.messages[-1]
    if last.role != "user":
        raise BadRequest("the last message must be the user's question (role 'user')", code="invalid_value")
    question = _text(last, len(body.messages) - 1)
    if not question.strip():
        raise BadRequest("the last user message is empty", code="invalid_value")
    history = [HistoryMessage(role=m.role, content=_text(m, i)[:MAX_HISTORY_MESSAGE_CHARS])  # type: ignore[arg-type]
               for i, m in enumerate(body.messages[:-1]) if m.role in USED_ROLES]
    filters = body.filters
    if body.collection is not None:
        filters = (filters or SearchFilters()).model_copy(update={"collection_id": body.collection})
    return ChatRequest(query=question, history_context=history[-max_history_turns:] if max_history_turns else None,
                       top_k=body.top_k, filters=filters, stream=body.stream).as_input()


async def _usage(runtime: Runtime, request: ChatInput, prepared: PreparedChat, answer: str) -> dict[str, int]:
    def count() -> dict[str, int]:
        tokens = runtime.embedder.count_tokens
        prompt = tokens(request.query) + sum(tokens(turn.content) for turn in request.history)
        prompt += sum(tokens(text) for text in prepared.context_used)
        completion = tokens(answer)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    return await asyncio.to_thread(count)  # tokenizing is CPU work: off the event loop


def _sources(prepared: PreparedChat) -> list[dict[str, Any]]:
    return [asdict(source) for source in prepared.sources]


@router.post("/chat/completions", response_model=None)
async def chat_completions(body: ChatCompletionRequest, user: UserDep, runtime: RuntimeDep) -> Response | dict[str, Any]:
    _check_model(runtime, body.model)
    request = chat_request(body, runtime.settings.max_history_turns)
    services = AgentServices(runtime, user)
    chat = await services.chat()
    # Retrieval and the checks happen before any byte is sent: their failures are plain errors.
    prepared = await chat.prepare(services.access, request)
    completion_id = f"chatcmpl-{prepared.turn.assistant_message_id}"
    created = int(time.time())
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        chunks = _chunks(runtime, chat, request, prepared, completion_id, created, body.model, include_usage)
        return EventSourceResponse(chunks)
    answer = await chat.collect(prepared)
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": body.model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer.text},
                     "finish_reason": "stop", "logprobs": None}],
        "usage": await _usage(runtime, request, prepared, answer.text),
        "sources": _sources(prepared),
        "conversation_id": answer.conversation_id,
    }


async def _chunks(runtime: Runtime, chat: ChatService, request: ChatInput, prepared: PreparedChat,
                  completion_id: str, created: int, model: str, include_usage: bool) -> AsyncIterator[ServerSentEvent]:
    def chunk(delta: dict[str, Any], finish_reason: str | None = None, **extra: Any) -> ServerSentEvent:
        payload = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}],
                   **extra}
        return ServerSentEvent(data=json.dumps(payload, ensure_ascii=False))

    pieces: list[str] = []
    events = chat.events(prepared)
    try:
        async for event in events:
            if isinstance(event, SourcesEvent):
                yield chunk({"role": "assistant", "content": ""}, sources=_sources(prepared),
                            conversation_id=prepared.turn.conversation_id)
            elif isinstance(event, DeltaEvent):
                pieces.append(event.text)
                yield chunk({"content": event.text})
    except AppError as exc:
        # Status 200 is sent: the failure travels as an OpenAI error event (the SDKs raise it).
        yield ServerSentEvent(data=json.dumps(openai_error_body(exc.status_code, exc.code, exc.message)))
        return
    except Exception:
        log.exception("chat completion stream failed")
        yield ServerSentEvent(data=json.dumps(openai_error_body(500, "internal_error", "internal server error")))
        return
    finally:
        await events.aclose()
    yield chunk({}, "stop")
    if include_usage:
        usage = await _usage(runtime, request, prepared, "".join(pieces))
        yield ServerSentEvent(data=json.dumps({"id": completion_id, "object": "chat.completion.chunk",
                                               "created": created, "model": model, "choices": [], "usage": usage}))
    yield ServerSentEvent(data="[DONE]")


# --- embeddings ----------------------------------------------------------------------------


def _base64(vector: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


@router.post("/embeddings")
async def embeddings(body: EmbeddingRequest, user: UserDep, runtime: RuntimeDep) -> dict[str, Any]:
    if body.model != runtime.embedder.model_name:
        raise NotFound(f"the embedding model {body.model[:200]!r} does not exist; this service embeds with "
                       f"{runtime.embedder.model_name!r}", code="model_not_found")
    texts = [body.input] if isinstance(body.input, str) else body.input
    vectors = await AgentServices(runtime, user).embed(texts)
    tokens = await asyncio.to_thread(lambda: sum(runtime.embedder.count_tokens(text) for text in texts))
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i,
                  "embedding": _base64(vector) if body.encoding_format == "base64" else vector}
                 for i, vector in enumerate(vectors)],
        "model": runtime.embedder.model_name,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }

