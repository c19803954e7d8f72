"""Helpers for the API-client suites: a signed-up account driven through `rag_client`."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

from conftest import sign_up

ROOT = Path(__file__).resolve().parent.parent
CLIENT_SRC = ROOT / "clients" / "python" / "src"
if str(CLIENT_SRC) not in sys.path:  # `make test` installs it; this also works from a checkout
    sys.path.insert(0, str(CLIENT_SRC))

from rag_client import RagClient  # noqa: E402

PASSWORD = "correct horse battery"


class Clock:
    """The client's clock for token lifetimes (`RagClient(clock=...)`), moved by the test."""

    def __init__(self) -> None:
        self.now = time.monotonic()

    def __call__(self) -> float:
        return self.now


def account(auth_url: str, rag_url: str, *, clock: Clock | None = None) -> RagClient:
    """A new user, signed in with email/password (the only way to manage keys)."""
    email = f"client-{uuid.uuid4().hex[:10]}@example.com"
    sign_up(auth_url, email=email, password=PASSWORD)
    return RagClient(rag_url, auth_url, email=email, password=PASSWORD, clock=clock or time.monotonic)


def cli_env(*, rag_url: str, auth_url: str, api_key: str | None = None, email: str | None = None) -> dict[str, str]:
    """The environment of a `rag-client` process: the API key, or `email` with PASSWORD."""
    credentials = {"RAG_API_KEY": api_key} if api_key else {"RAG_EMAIL": email or "", "RAG_PASSWORD": PASSWORD}
    return {**{k: v for k, v in os.environ.items() if k not in ("RAG_API_KEY", "RAG_EMAIL", "RAG_PASSWORD")},
            "RAG_URL": rag_url, "AUTH_URL": auth_url, **credentials,
            "PYTHONPATH": os.pathsep.join([str(CLIENT_SRC), os.environ.get("PYTHONPATH", "")]),
            "COLUMNS": "200"}


def run_cli(args: list[str], *, rag_url: str, auth_url: str, api_key: str | None = None,
            email: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """`rag-client ARGS` as a real process (python -m rag_client), run to its end."""
    return subprocess.run([sys.executable, "-m", "rag_client", *args], capture_output=True, text=True,
                          env=cli_env(rag_url=rag_url, auth_url=auth_url, api_key=api_key, email=email),
                          timeout=timeout)


def start_cli(args: list[str], *, rag_url: str, auth_url: str, api_key: str) -> subprocess.Popen:
    """`rag-client ARGS` started in the background (its output is discarded)."""
    return subprocess.Popen([sys.executable, "-m", "rag_client", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=cli_env(rag_url=rag_url, auth_url=auth_url, api_key=api_key))
