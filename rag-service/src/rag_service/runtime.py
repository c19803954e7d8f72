"""Everything the service holds for its lifetime, built once from the settings.

`create_app` (main.py) builds a `Runtime` in its lifespan and stores it on
`app.state.runtime`; routes reach its parts through the dependencies in `deps.py`.
Tests build their own `Runtime` (or override single dependencies) instead of patching.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from rag_service.auth.api_keys import ApiKeyVerifier
from rag_service.auth.bearer import BearerAuthenticator
from rag_service.auth.membership_changes import MembershipChanges
from rag_service.auth.tokens import AccessTokenVerifier
from rag_service.config import Settings
from rag_service.documents.extraction import ExtractionLimits
from rag_service.documents.sandbox import ExtractionPool, SandboxLimits
from rag_service.documents.service import DocumentServices
from rag_service.core.ingestion_gate import IngestionGate
from rag_service.providers.base import Embedder, Generator
from rag_service.providers.factory import build_embedder, build_generator
from rag_service.ratelimit import RateLimiter
from rag_service.storage.db import create_engine_and_sessionmaker
from rag_service.storage.factory import build_vector_store
from rag_service.storage.locks import shared_account_slots
from rag_service.storage.models import utcnow
from rag_service.storage.sparse import SparseEncoder
from rag_service.storage.vectors import VectorStore


@dataclass
class Runtime:
    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    vector_store: VectorStore
    sparse_encoder: SparseEncoder
    embedder: Embedder
    generator: Generator
    token_verifier: AccessTokenVerifier
    # Sandboxed worker processes that read uploaded files (never the event loop). Built
    # from the settings when not given; its workers start at the first upload.
    extraction_pool: ExtractionPool | None = None
    ingestion_gate: IngestionGate | None = None
    # Recent membership changes, filled by the poller the app's lifespan runs (main.py).
    membership_changes: MembershipChanges = field(default_factory=MembershipChanges)
    # Start-up repair on a single-process vector store treats older claims as stale.
    started_at: datetime = field(default_factory=utcnow)
    # Built from `settings` (also by dataclasses.replace with other settings).
    rate_limiter: RateLimiter = field(init=False)
    # API keys as bearers (auth/api_keys.py), verified through `token_verifier`.
    api_keys: ApiKeyVerifier = field(init=False)
    # Every protocol's one way from a bearer credential to the caller (auth/bearer.py).
    authenticator: BearerAuthenticator = field(init=False)

    def __post_init__(self) -> None:
        self.rate_limiter = RateLimiter(self.settings)
        self.api_keys = ApiKeyVerifier(self.settings, self.token_verifier)
        self.authenticator = BearerAuthenticator(self.token_verifier, self.api_keys, self.membership_changes)
        if self.extraction_pool is None:
            self.extraction_pool = build_extraction_pool(self.settings)

    @property
    def documents(self) -> DocumentServices:
        """What document services are built from (for code that opens its own sessions)."""
        return DocumentServices(self.sessionmaker, self.vector_store, self.sparse_encoder, self.embedder,
                                self.settings, gate=self.ingestion_gate)

    async def aclose(self) -> None:
        if self.extraction_pool is not None:
            await self.extraction_pool.aclose()
        await self.api_keys.aclose()
        await self.token_verifier.aclose()
        # HTTP providers hold clients, the local embedder a worker thread.
        for provider in (self.embedder, self.generator):
            close = getattr(provider, "aclose", None)
            if close is not None:
                await close()
        await self.vector_store.close()
        await self.engine.dispose()


async def build_runtime(settings: Settings) -> Runtime:
    engine, sessionmaker = create_engine_and_sessionmaker(settings)
    embedder = build_embedder(settings)
    vector_store = build_vector_store(settings, model_name=embedder.model_name, dimension=embedder.dimension)
    await vector_store.ensure_collection()
    return Runtime(
        settings=settings,
        engine=engine,
        sessionmaker=sessionmaker,
        vector_store=vector_store,
        sparse_encoder=SparseEncoder(),
        embedder=embedder,
        generator=build_generator(settings, embedder),
        token_verifier=AccessTokenVerifier(settings),
        extraction_pool=build_extraction_pool(settings),
        # Several replicas share each account's ingestion slots through the database.
        ingestion_gate=IngestionGate.from_settings(settings, shared_account_slots(engine, vector_store.single_process)),
        membership_changes=MembershipChanges(settings.max_tracked_membership_changes),
    )


def build_extraction_pool(settings: Settings) -> ExtractionPool:
    return ExtractionPool(SandboxLimits.from_settings(settings), ExtractionLimits.from_settings(settings))
