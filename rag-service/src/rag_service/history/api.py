"""`GET /history`, `GET /history/{conversation_id}`, `DELETE /history/{conversation_id}`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from rag_service.deps import AccessDep, CheapRateLimit, SessionmakerDep, SettingsDep, WriteScope
from rag_service.errors import Unprocessable, check_in_range, error_responses
from rag_service.history.schemas import ConversationDetail, DeletedConversation, HistoryPage
from rag_service.history.service import HistoryService

router = APIRouter(tags=["history"])

# Far beyond any real history; keeps OFFSET inside a 64-bit integer.
ConversationId = Annotated[str, Path(min_length=1, max_length=64)]


async def get_history_service(sessionmaker: SessionmakerDep) -> HistoryService:
    return HistoryService(sessionmaker)


HistoryServiceDep = Annotated[HistoryService, Depends(get_history_service)]


@router.get("/history", response_model=HistoryPage, dependencies=[CheapRateLimit])
async def list_history(
    access: AccessDep,
    history: HistoryServiceDep,
    settings: SettingsDep,
    page: Annotated[int, Query(description="From 1 to Settings.max_page")] = 1,
    limit: Annotated[int, Query(ge=1)] = 20,
) -> HistoryPage:
    check_in_range("page", page, 1, settings.max_page, "max_page")
    max_page_size = settings.max_page_size
    if limit > max_page_size:
        raise Unprocessable(f"limit must be between 1 and {max_page_size} (max_page_size)",
                            code="validation_error")
    return HistoryPage.of(await history.list_conversations(access, page=page, limit=limit))


@router.get("/history/{conversation_id}", response_model=ConversationDetail, dependencies=[CheapRateLimit],
            responses=error_responses(404))
async def get_conversation(access: AccessDep, history: HistoryServiceDep,
                           conversation_id: ConversationId) -> ConversationDetail:
    return ConversationDetail.of(await history.get_conversation(access, conversation_id))


@router.delete("/history/{conversation_id}", response_model=DeletedConversation, dependencies=[WriteScope, CheapRateLimit],
               responses=error_responses(404))
async def delete_conversation(
    access: AccessDep, history: HistoryServiceDep, conversation_id: ConversationId
) -> DeletedConversation:
    await history.delete_conversation(access, conversation_id)
    return DeletedConversation(conversation_id=conversation_id)
