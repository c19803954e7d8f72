from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from stack import Service, start_auth, start_rag

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Service]]:
    """Both services on the embedded defaults (PGlite, SQLite, Qdrant Edge, local model)."""
    data = tmp_path_factory.mktemp("stack")
    auth = start_auth(data / "auth", ARTIFACTS)
    rag = None
    try:
        rag = start_rag(data / "rag", ARTIFACTS, auth.url)
        print(f"\nfirst start: auth-service {auth.started_in:.1f}s, rag-service {rag.started_in:.1f}s")
        yield {"auth": auth, "rag": rag}
    finally:
        if rag:
            rag.stop()
        auth.stop()


@pytest.fixture(scope="session")
def auth_url(stack: dict[str, Service]) -> str:
    return stack["auth"].url


@pytest.fixture(scope="session")
def rag_url(stack: dict[str, Service]) -> str:
    return stack["rag"].url


def sign_up(auth_url: str, email: str | None = None, password: str = "correct horse battery") -> dict:
    email = email or f"user-{uuid.uuid4().hex[:10]}@example.com"
    response = httpx.post(f"{auth_url}/auth/signup",
                          json={"email": email, "password": password, "full_name": "E2E User"}, timeout=30)
    assert response.status_code in (200, 201), response.text
    return response.json()


@pytest.fixture
def user(auth_url: str) -> dict:
    return sign_up(auth_url)
