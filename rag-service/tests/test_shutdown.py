"""SIGTERM during a long indexing run: the real `rag serve` process exits promptly, and the
interrupted document is finished by the next start (nothing lost).

Before: uvicorn waited for the request indexing thousands of chunks (105 s in the attack
run); now requests still running after SHUTDOWN_GRACE_SECONDS are cancelled, the
interrupted ingestion releases its claim (the row stays `indexing`), and start-up repair
re-indexes it. The wait bound below is a liveness deadline for a shared machine, not a
speed assertion (bench/ingest_throughput.py --sigterm prints the exit time).
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time

import httpx

from ingestion_support import new_user, paragraphs
from serve_support import free_port, start_serve, stop, wait_healthy

CHUNKS = 4_000
# Liveness: far above the ~5 s the shutdown takes, far below the 100+ s it took before.
EXIT_DEADLINE_S = 30
POLL_S = 0.2


def documents(port: int, headers: dict[str, str]) -> list[dict]:
    response = httpx.get(f"http://127.0.0.1:{port}/documents", headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["documents"]


def test_sigterm_mid_indexing_exits_and_the_next_start_finishes_the_document(issuer, tmp_path):
    data_dir = tmp_path / "data"
    env = {"CHUNK_SIZE_TOKENS": "40", "CHUNK_OVERLAP_TOKENS": "0", "INGEST_BATCH_SIZE": "64",
           "AUTH_ISSUER": issuer.issuer, "AUTH_AUDIENCE": issuer.audience}
    user = new_user()
    headers = {"Authorization": f"Bearer {issuer.mint(user)}"}
    content = paragraphs("shutdown", CHUNKS)

    port = free_port()
    process = start_serve(data_dir, port, issuer.jwks_url, **env)
    try:
        assert wait_healthy(process, port).get("status") == 200
        answers: list[object] = []

        def save() -> None:
            try:
                answers.append(httpx.post(f"http://127.0.0.1:{port}/save-document", headers=headers, timeout=600,
                                          json={"title": "Long", "content": content}).status_code)
            except httpx.HTTPError as exc:  # the connection closed by the stopping server
                answers.append(type(exc).__name__)

        saving = threading.Thread(target=save)
        saving.start()
        # Mid-indexing: the row exists and is being indexed (the save has not answered).
        deadline = time.monotonic() + 300
        while not [d for d in documents(port, headers) if d["status"] == "indexing"]:
            assert time.monotonic() < deadline and not answers, f"the indexing never got under way: {answers}"
            time.sleep(POLL_S)
        began = time.monotonic()
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=EXIT_DEADLINE_S)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"rag serve still running {EXIT_DEADLINE_S} s after SIGTERM") from None
        exit_seconds = time.monotonic() - began
        saving.join(timeout=60)
        assert answers and answers[0] != 201, answers  # interrupted, not finished before exiting
        print(f"rag serve exited {exit_seconds:.1f} s after SIGTERM mid-indexing (exit code {process.returncode})")
        log = process.stderr.read()
        # uvicorn re-raises the signal it caught once its shutdown is complete.
        assert process.returncode == -signal.SIGTERM, log[-3000:]
        assert "interrupted; left for repair" in log, log[-3000:]
    finally:
        stop([process])

    # The next start's repair finishes the interrupted document before serving.
    port = free_port()
    process = start_serve(data_dir, port, issuer.jwks_url, **env)
    try:
        assert wait_healthy(process, port).get("status") == 200
        [document] = documents(port, headers)
        assert document["status"] == "ready", document
        assert document["chunk_count"] > CHUNKS // 2  # every chunk of the text, indexed by the repair
    finally:
        stop([process])
