"""Run `rag serve` as a real process for tests: free port, own environment, health wait."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

# A liveness deadline, not a speed assertion: processes share two busy cores.
START_DEADLINE_S = 180
# Never inherited from the developer's shell: each test says what it wants.
_CLEARED = ("DATABASE_URL", "QDRANT_URL", "GEMINI_API_KEY", "REDIS_URL", "METRICS_TOKEN", "RAG_ENV",
            "API_DOCS_ENABLED", "MAX_REQUEST_HEADER_BYTES", "ACCOUNT_EVENTS_TOKEN", "AUTH_EVENTS_URL")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_serve(data_dir: Path, port: int, jwks_url: str, **env_overrides: str) -> subprocess.Popen:
    env = {name: value for name, value in os.environ.items() if name not in _CLEARED}
    env.update({
        "DATA_DIR": str(data_dir),
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "AUTH_JWKS_URL": jwks_url,
        "EMBEDDING_PROVIDER": "local",
        "LLM_PROVIDER": "extractive",
        "LOG_LEVEL": "WARNING",
        **env_overrides,
    })
    return subprocess.Popen(
        [sys.executable, "-c", "from rag_service.cli import app; app()", "serve"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )


def wait_healthy(process: subprocess.Popen, port: int) -> dict[str, Any]:
    """{"status", "body", "headers"} of the first /health answer, or why there was none."""
    deadline = time.monotonic() + START_DEADLINE_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return {"exited": process.returncode, "stderr": process.stderr.read()[-3000:]}
        try:
            response = httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
            return {"status": response.status_code, "body": response.json(), "headers": response.headers}
        except httpx.TransportError:
            time.sleep(0.3)
    return {"timeout": True}


def stop(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
