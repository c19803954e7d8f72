"""FastAPI dependencies: the only way routes reach the runtime's parts.

Tests override these with `app.dependency_overrides` instead of patching modules.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from rag_service.auth.tokens import CurrentUser, current_user
from rag_service.config import Settings
from rag_service.documents.quotas import IngestionGate
from rag_service.providers.base import Embedder, Generator
from rag_service.runtime import Runtime
from rag_service.storage.sparse import SparseEncoder
from rag_service.storage.vectors import VectorStore


def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def get_settings(runtime: RuntimeDep) -> Settings:
    return runtime.settings


async def get_session(runtime: RuntimeDep) -> AsyncIterator[AsyncSession]:
    async with runtime.sessionmaker() as session:
        yield session


def get_vector_store(runtime: RuntimeDep) -> VectorStore:
    return runtime.vector_store


def get_sparse_encoder(runtime: RuntimeDep) -> SparseEncoder:
    return runtime.sparse_encoder


def get_embedder(runtime: RuntimeDep) -> Embedder:
    return runtime.embedder


def get_generator(runtime: RuntimeDep) -> Generator:
    return runtime.generator


def get_ingestion_gate(runtime: RuntimeDep) -> IngestionGate | None:
    return runtime.ingestion_gate


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[AsyncSession, Depends(get_session)]
VectorStoreDep = Annotated[VectorStore, Depends(get_vector_store)]
SparseEncoderDep = Annotated[SparseEncoder, Depends(get_sparse_encoder)]
EmbedderDep = Annotated[Embedder, Depends(get_embedder)]
GeneratorDep = Annotated[Generator, Depends(get_generator)]
IngestionGateDep = Annotated[IngestionGate | None, Depends(get_ingestion_gate)]
# The verified caller; every protected route depends on it (401/503 otherwise).
UserDep = Annotated[CurrentUser, Depends(current_user)]
