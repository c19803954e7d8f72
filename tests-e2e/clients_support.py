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


CREDENTIAL_VARIABLES = ("RAG_API_KEY", "RAG_EMAIL", "RAG_PASSWORD", "RAG_TWO_FACTOR_CODE")


def cli_env(*, rag_url: str, auth_url: str, api_key: str | None = None, email: str | None = None,
            two_factor_code: str | None = None) -> dict[str, str]:
    """The environment of a `rag-client` process: the API key, or `email` with PASSWORD (and
    the two-factor code, when given)."""
    credentials = {"RAG_API_KEY": api_key} if api_key else {"RAG_EMAIL": email or "", "RAG_PASSWORD": PASSWORD}
    if two_factor_code is not None:
        credentials["RAG_TWO_FACTOR_CODE"] = two_factor_code
    return {**{k: v for k, v in os.environ.items() if k not in CREDENTIAL_VARIABLES},
            "RAG_URL": rag_url, "AUTH_URL": auth_url, **credentials,
            "PYTHONPATH": os.pathsep.join([str(CLIENT_SRC), os.environ.get("PYTHONPATH", "")]),
            "COLUMNS": "200"}


def run_cli(args: list[str], *, rag_url: str, auth_url: str, api_key: str | None = None,
            email: str | None = None, two_factor_code: str | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
    """`rag-client ARGS` as a real process (python -m rag_client), run to its end, with no
    terminal (stdin is /dev/null)."""
    return subprocess.run([sys.executable, "-m", "rag_client", *args], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=timeout,
                          env=cli_env(rag_url=rag_url, auth_url=auth_url, api_key=api_key, email=email,
                                      two_factor_code=two_factor_code))


def start_cli(args: list[str], *, rag_url: str, auth_url: str, api_key: str) -> subprocess.Popen:
    """`rag-client ARGS` started in the background (its output is discarded)."""
    return subprocess.Popen([sys.executable, "-m", "rag_client", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=cli_env(rag_url=rag_url, auth_url=auth_url, api_key=api_key))


def run_cli_on_a_terminal(args: list[str], *, typed: str, prompt: str, rag_url: str, auth_url: str,
                          email: str, timeout: float = 300) -> tuple[subprocess.CompletedProcess, bytes]:
    """`rag-client ARGS` with a pseudo-terminal as its stdin: once `prompt` is on its stderr,
    `typed` and Enter are typed into the terminal. Returns the finished process and what the
    terminal showed back (its echo). In a session of its own the process has no controlling
    terminal (it cannot ask the one running the tests); the pseudo-terminal is its stdin."""
    controller, terminal = os.openpty()
    try:
        process = subprocess.Popen([sys.executable, "-m", "rag_client", *args], stdin=terminal,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                                   env=cli_env(rag_url=rag_url, auth_url=auth_url, email=email))
    finally:
        os.close(terminal)  # the process holds its own copy
    try:
        shown = b""
        while prompt.encode() not in shown:  # the process prints it, or exits and this ends at EOF
            chunk = os.read(process.stderr.fileno(), 4096)
            if not chunk:
                break
            shown += chunk
        os.write(controller, typed.encode() + b"\n")
        stdout, stderr = process.communicate(timeout=timeout)
        os.set_blocking(controller, False)
        try:
            echoed = os.read(controller, 4096)
        except (BlockingIOError, OSError):  # nothing echoed (OSError: the terminal's other end is closed)
            echoed = b""
    finally:
        os.close(controller)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout.decode(),
                                       (shown + stderr).decode()), echoed
