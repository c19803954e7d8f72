"""FastAPI dependencies: the only way routes reach the runtime's parts.

Tests override these with `app.dependency_overrides` instead of patching modules.
Dependencies are `async def` even when they only return an attribute: FastAPI runs a plain
`def` dependency in its thread pool, a thread hop per dependency per request (a search
had seven). Nothing here blocks or computes, so it runs on the event loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from rag_service.auth.tokens import CurrentUser
from rag_service.config import Settings
from rag_service.core.ingestion_gate import IngestionGate
from rag_service.documents.sandbox import ExtractionPool
from rag_service.errors import Forbidden
from rag_service.providers.base import Embedder, Generator
from rag_service.ratelimit import Budget, RateLimiter
from rag_service.runtime import Runtime
from rag_service.storage.access import Access
from rag_service.storage.sparse import SparseEncoder
from rag_service.storage.vectors import VectorStore


async def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def runtime_of_scope(scope: Any) -> Runtime:
    """For plain ASGI endpoints (the MCP server at /mcp), which have no dependencies."""
    return scope["app"].state.runtime


async def get_settings(runtime: RuntimeDep) -> Settings:
    return runtime.settings


async def get_session(runtime: RuntimeDep) -> AsyncIterator[AsyncSession]:
    async with runtime.sessionmaker() as session:
        yield session


async def get_sessionmaker(runtime: RuntimeDep) -> async_sessionmaker[AsyncSession]:
    """For services that open their own short transactions (chat turns, history)."""
    return runtime.sessionmaker


async def get_vector_store(runtime: RuntimeDep) -> VectorStore:
    return runtime.vector_store


async def get_sparse_encoder(runtime: RuntimeDep) -> SparseEncoder:
    return runtime.sparse_encoder


async def get_embedder(runtime: RuntimeDep) -> Embedder:
    return runtime.embedder


async def get_generator(runtime: RuntimeDep) -> Generator:
    return runtime.generator


_bearer = HTTPBearer(auto_error=False, description="Access JWT from the auth-service, or an API key (rag_…)")


def client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


async def current_user(
    request: Request,
    runtime: RuntimeDep,
    credentials: HTTPAuthorizationCredentials | None = Security(_bearer),
) -> CurrentUser:
    """The verified caller (auth/bearer.py: an access JWT or an API key), 401 for a
    missing/invalid token (503 if the auth-service is unreachable), or 401 `token_stale` for a
    token with organizations minted before its user's latest membership change
    (auth/membership_changes.py): the client mints a new one."""
    user = await runtime.authenticator.authenticate(credentials.credentials if credentials else None,
                                                    client_ip=client_ip(request))
    # Read by the access log (observability.py).
    request.state.user_id = user.id
    return user


async def current_access(user: Annotated[CurrentUser, Depends(current_user)]) -> Access:
    """What the verified caller may see and change (storage/access.py): every read and write
    is scoped by it."""
    return Access(user.id, user.orgs)


async def get_extraction_pool(runtime: RuntimeDep) -> ExtractionPool:
    assert runtime.extraction_pool is not None  # built in Runtime.__post_init__
    return runtime.extraction_pool


async def get_ingestion_gate(runtime: RuntimeDep) -> IngestionGate | None:
    return runtime.ingestion_gate


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[AsyncSession, Depends(get_session)]
SessionmakerDep = Annotated[async_sessionmaker[AsyncSession], Depends(get_sessionmaker)]
VectorStoreDep = Annotated[VectorStore, Depends(get_vector_store)]
SparseEncoderDep = Annotated[SparseEncoder, Depends(get_sparse_encoder)]
EmbedderDep = Annotated[Embedder, Depends(get_embedder)]
GeneratorDep = Annotated[Generator, Depends(get_generator)]
ExtractionPoolDep = Annotated[ExtractionPool, Depends(get_extraction_pool)]
IngestionGateDep = Annotated[IngestionGate | None, Depends(get_ingestion_gate)]
# The verified caller; every protected route depends on it (401/503 otherwise).
UserDep = Annotated[CurrentUser, Depends(current_user)]
# The verified caller's access scope, for the services (built once per request).
AccessDep = Annotated[Access, Depends(current_access)]


async def get_rate_limiter(runtime: RuntimeDep) -> RateLimiter:
    return runtime.rate_limiter


RateLimiterDep = Annotated[RateLimiter, Depends(get_rate_limiter)]


def _rate_limit(budget: Budget) -> Any:
    async def enforce_rate_limit(user: UserDep, limiter: RateLimiterDep) -> None:
        await limiter.hit(budget, user.id)

    enforce_rate_limit.__name__ = f"enforce_{budget}_rate_limit"
    return enforce_rate_limit


# Route dependencies: `@router.get(..., dependencies=[CheapRateLimit])`; see ratelimit.py.
CheapRateLimit = Depends(_rate_limit("cheap"))
CostlyRateLimit = Depends(_rate_limit("costly"))


async def require_write_scope(user: UserDep) -> None:
    """Write routes (save, upload, batch, delete, embed): refused to a token whose scope is `read`
    (an API key made read-only). A token without `scope` (a session's) has full scope."""
    if user.scope == "read":
        raise Forbidden(
            "this token's scope is 'read': it may search, chat and read history and documents; "
            "saving, uploading, deleting and embedding need a 'write' API key",
            code="insufficient_scope",
        )


# Listed first in a write route's `dependencies=[WriteScope, ...]`, so a refused call spends no budget.
WriteScope = Depends(require_write_scope)
