"""Starts the real services as child processes on free ports, for the end-to-end suites."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
AUTH_DIR = ROOT / "auth-service"
RAG_DIR = ROOT / "rag-service"
RAG_PYTHON = RAG_DIR / ".venv" / "bin" / "python"
# Every rag-service started here shares one model cache (git-ignored, emptied by `make
# clean`; the rag-service tests use it too): the first start of a run exports the default
# encoder's ONNX graph, later ones (and later runs) load it.
MODEL_CACHE_DIR = os.environ.get("MODEL_CACHE_DIR") or str(ROOT / "data" / "model-cache")
# The shared secret of the account events feed (GET /auth/events): one per run, given to every
# auth-service and rag-service started here (a test may pass another to either).
ACCOUNT_EVENTS_TOKEN = secrets.token_urlsafe(32)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Service:
    name: str
    url: str
    process: subprocess.Popen
    log_path: Path
    started_in: float = 0.0
    env: dict[str, str] = field(default_factory=dict)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)


def start(name: str, cmd: list[str], cwd: Path, env: dict[str, str], url: str, logs: Path,
          timeout: float = 90.0) -> Service:
    """Start `cmd` in its own process group and wait until `url`/health answers 200."""
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{name}.log"
    full_env = {**os.environ, **env}
    began = time.monotonic()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(cmd, cwd=cwd, env=full_env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    service = Service(name, url, process, log_path, env=env)
    deadline = began + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}:\n{service.log()[-4000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                service.started_in = time.monotonic() - began
                return service
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    service.stop()
    raise RuntimeError(f"{name} did not become healthy in {timeout}s:\n{service.log()[-4000:]}")


def start_auth(data_dir: Path, logs: Path, name: str = "auth", port: int | None = None,
               **env: str) -> Service:
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    base_env = {"PORT": str(port), "HOST": "127.0.0.1", "AUTH_DATA_DIR": str(data_dir),
                "BETTER_AUTH_URL": url, "NODE_ENV": "development",
                "ACCOUNT_EVENTS_TOKEN": ACCOUNT_EVENTS_TOKEN,
                # Many sign-ups from one loopback address; the limiter has its own tests.
                "AUTH_RATE_LIMIT_SIGNIN_MAX": "10000", "AUTH_RATE_LIMIT_MAX": "100000"}
    return start(name, ["npm", "run", "--silent", "start"], AUTH_DIR, {**base_env, **env}, url, logs)


def start_rag(data_dir: Path, logs: Path, auth_url: str, name: str = "rag", port: int | None = None,
              **env: str) -> Service:
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    base_env = {"PORT": str(port), "HOST": "127.0.0.1", "DATA_DIR": str(data_dir),
                "AUTH_JWKS_URL": f"{auth_url}/api/auth/jwks", "AUTH_ISSUER": auth_url,
                "HF_HUB_OFFLINE": "1", "MODEL_CACHE_DIR": MODEL_CACHE_DIR,
                "ACCOUNT_EVENTS_TOKEN": ACCOUNT_EVENTS_TOKEN}
    # 180 s: a liveness bound (the first start of a fresh cache exports the graph on busy cores).
    return start(name, [str(RAG_PYTHON), "-m", "rag_service"], RAG_DIR, {**base_env, **env}, url, logs, timeout=180.0)


def start_oidc_provider(logs: Path, redirect_uris: list[str], users: list[dict], client_id: str,
                        client_secret: str, name: str = "oidc-provider") -> Service:
    """The local OpenID Connect provider (auth-service/dev/oidc-provider.ts: the certified
    `oidc-provider` package) on a free loopback port, with one client and these test people
    (`login`, `email`, `email_verified`, `name`); its issuer is the returned `url`."""
    port = free_port()
    env = {"OIDC_DEV_PORT": str(port), "OIDC_DEV_CLIENT_ID": client_id, "OIDC_DEV_CLIENT_SECRET": client_secret,
           "OIDC_DEV_REDIRECT_URIS": ",".join(redirect_uris), "OIDC_DEV_USERS": json.dumps(users)}
    return start(name, ["npm", "run", "--silent", "oidc-provider"], AUTH_DIR, env, f"http://127.0.0.1:{port}", logs)
