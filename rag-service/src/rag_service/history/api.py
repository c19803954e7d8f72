"""`GET /history`, `GET /history/{conversation_id}`, `DELETE /history/{conversation_id}`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from rag_service.deps import CheapRateLimit, SessionmakerDep, SettingsDep, UserDep, WriteScope
from rag_service.errors import Unprocessable, error_responses
from rag_service.history.schemas import ConversationDetail, DeletedConversation, HistoryPage
from rag_service.history.service import HistoryService

router = APIRouter(tags=["history"])

# Far beyond any real history; keeps OFFSET inside a 64-bit integer.
MAX_PAGE = 1_000_000
ConversationId = Annotated[str, Path(min_length=1, max_length=64)]


def get_history_service(sessionmaker: SessionmakerDep, settings: SettingsDep) -> HistoryService:
    return HistoryService(sessionmaker, max_history_turns=settings.max_history_turns)


HistoryServiceDep = Annotated[HistoryService, Depends(get_history_service)]


@router.get("/history", response_model=HistoryPage, dependencies=[CheapRateLimit])
async def list_history(
    user: UserDep,
    history: HistoryServiceDep,
    settings: SettingsDep,
    page: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 1,
    limit: Annotated[int, Query(ge=1)] = 20,
) -> HistoryPage:
    max_page_size = settings.max_page_size
    if limit > max_page_size:
        raise Unprocessable(f"limit must be between 1 and {max_page_size} (max_page_size)",
                            code="validation_error")
    return await history.list_conversations(user.id, page=page, limit=limit)


@router.get("/history/{conversation_id}", response_model=ConversationDetail, dependencies=[CheapRateLimit],
            responses=error_responses(404))
async def get_conversation(user: UserDep, history: HistoryServiceDep, conversation_id: ConversationId) -> ConversationDetail:
    return await history.get_conversation(user.id, conversation_id)


@router.delete("/history/{conversation_id}", response_model=DeletedConversation, dependencies=[WriteScope, CheapRateLimit],
               responses=error_responses(404))
async def delete_conversation(
    user: UserDep, history: HistoryServiceDep, conversation_id: ConversationId
) -> DeletedConversation:
    return await history.delete_conversation(user.id, conversation_id)
