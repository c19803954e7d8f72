"""`GET /health` (no auth): 200 when the database and the vector store answer and the local
encoder's lanes are alive and within their deadline, else 503.

The body is the same either way so load balancers and humans see what is down.
"""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from rag_service.deps import RuntimeDep
from rag_service.storage.db import check_database

log = logging.getLogger(__name__)
router = APIRouter(tags=["health"])



async def _vector_store_healthy(runtime: RuntimeDep) -> bool:
    try:
        async with asyncio.timeout(runtime.settings.health_check_timeout_seconds):
            return bool(await runtime.vector_store.healthy())
    except Exception as exc:  # unreachable server, timeout...: unhealthy, reason in the log
        log.warning("vector store health check failed: %r", exc)
        return False


@router.get("/health", responses={503: {"description": "database, vector store or local encoder down"}})
async def health(runtime: RuntimeDep) -> JSONResponse:
    database_ok, qdrant_ok = await asyncio.gather(
        check_database(runtime.engine, runtime.settings.health_check_timeout_seconds), _vector_store_healthy(runtime)
    )
    settings = runtime.settings
    # A local encoder's lanes (threads): alive, busy, restarts, timeouts (encoder_worker.py).
    encoder_stats = getattr(runtime.embedder, "encoder_stats", None)
    encoder = encoder_stats() if encoder_stats is not None else None
    healthy = database_ok and qdrant_ok and (encoder is None or encoder["healthy"])
    body = {
        "status": "ok" if healthy else "degraded",
        "services": {
            "database": database_ok,
            "qdrant": qdrant_ok,
            "embeddings": f"{settings.resolved_embedding_provider}/{runtime.embedder.model_name}",
            "llm": settings.resolved_llm_provider,
        },
    }
    if encoder is not None:
        body["services"]["encoder"] = encoder
    return JSONResponse(body, status_code=200 if healthy else 503)
