"""What `make dev` starts (scripts/dev.sh, as a real process on free ports), tried as a new
user would:

- with AUTH_PORT / RAG_PORT / WEB_PORT moved, the example web app (opened without `?auth=` /
  `?rag=`) calls the moved services: a sign-up in Chromium reaches them;
- every shell example of README.md runs as written, in order, against it (only the default
  ports 3001 and 8000 and the scratch file /tmp/signup.json are rewritten), each curl failing
  the run on an HTTP error.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from browser_support import browser_pages, chromium, require_chromium, sign_up
from conftest import ARTIFACTS
from stack import MODEL_CACHE_DIR, ROOT, Service, free_port, start

FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
# README shell blocks that are not run, by their first line, and why.
NOT_RUN = {
    "make dev    # installs what is missing": "starts the stack this test runs the others against",
    "EMBEDDING_PROVIDER=openai OPENAI_EMBEDDING_MODEL=nomic-embed-text": "needs an Ollama server",
    # The two-factor sign-in needs an account with codes turned on and a code from its
    # authenticator: test_browser_sign_in_methods.py and auth-service/test/two-factor.test.ts
    # make the same two calls with codes computed by a TOTP library.
    "curl -s localhost:3001/auth/login -H 'content-type: application/json' -d '{\"email\":\"a@example.com\"":
        "needs an authenticator's code",
    # The bundled OpenID provider runs until stopped; test_sso.py starts the same provider.
    "make oidc-provider": "starts a provider that keeps running",
}


@dataclass
class DevStack:
    auth_port: int
    rag_port: int
    web_port: int
    process: Service

    @property
    def web(self) -> str:
        return f"http://localhost:{self.web_port}"


def wait_until_answers(url: str, dev: Service, timeout: float = 120.0) -> None:
    """Until `url` answers 200 (a liveness bound, not a timing): fails if make dev exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert dev.process.poll() is None, f"make dev exited:\n{dev.log()[-4000:]}"
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise AssertionError(f"{url} did not answer in {timeout}s:\n{dev.log()[-4000:]}")


@pytest.fixture(scope="module")
def dev_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    """scripts/dev.sh (what `make dev` runs after installing) with all three ports moved."""
    auth_port, rag_port, web_port = free_port(), free_port(), free_port()
    env = {"AUTH_PORT": str(auth_port), "RAG_PORT": str(rag_port), "WEB_PORT": str(web_port),
           "DATA_DIR": str(tmp_path_factory.mktemp("make-dev")), "MODEL_CACHE_DIR": MODEL_CACHE_DIR,
           "HF_HUB_OFFLINE": "1"}
    # Started like any service here: its own process group, ready once the rag-service's
    # /health answers (it starts last and needs the auth-service's JWKS).
    dev = start("make-dev", ["bash", "scripts/dev.sh"], ROOT, env, f"http://127.0.0.1:{rag_port}",
                ARTIFACTS, timeout=180.0)
    try:
        # The rag-service can be up before the auth-service (tsx compiles it on a busy machine).
        for url in (f"http://127.0.0.1:{auth_port}/health", f"http://127.0.0.1:{web_port}/"):
            wait_until_answers(url, dev)
        yield DevStack(auth_port, rag_port, web_port, dev)
    finally:
        dev.stop()


def test_the_web_app_calls_the_ports_make_dev_was_given(dev_stack: DevStack) -> None:
    config = httpx.get(f"{dev_stack.web}/config.js", timeout=10)
    assert config.status_code == 200
    assert f'"authUrl": "http://localhost:{dev_stack.auth_port}"' in config.text
    assert f'"ragUrl": "http://localhost:{dev_stack.rag_port}"' in config.text
    # Every other file is the app's own.
    assert httpx.get(f"{dev_stack.web}/core.js", timeout=10).text == (ROOT / "examples" / "web" / "core.js").read_text()

    require_chromium()
    with chromium() as browser, browser_pages(browser, f"{dev_stack.web}/", "make-dev") as pages:
        page = pages.open("newcomer")
        assert page.evaluate("() => [window.ragApp.AUTH_URL, window.ragApp.RAG_URL]") == [
            f"http://localhost:{dev_stack.auth_port}", f"http://localhost:{dev_stack.rag_port}"]
        sign_up(page, f"newcomer-{uuid.uuid4().hex[:8]}@example.com", "Newcomer")  # auth-service, then /documents etc.
        assert page.inner_text("#message") == ""
        assert page.locator("#documents-empty").is_visible()


def readme_shell_blocks() -> list[str]:
    blocks = [code for lang, code in FENCE.findall((ROOT / "README.md").read_text()) if lang in ("sh", "bash")]
    run = [code for code in blocks if not any(code.startswith(first) for first in NOT_RUN)]
    assert len(blocks) - len(run) == len(NOT_RUN), "a block listed in NOT_RUN is gone from README.md"
    return run


def test_every_readme_shell_example_runs_in_order(dev_stack: DevStack, tmp_path: Path) -> None:
    blocks = readme_shell_blocks()
    # The stack's ports for the defaults, and this test's folder for the README's scratch file.
    script = "\n".join(blocks).replace("localhost:3001", f"localhost:{dev_stack.auth_port}") \
                               .replace("localhost:8000", f"localhost:{dev_stack.rag_port}") \
                               .replace("/tmp/signup.json", str(tmp_path / "signup.json"))
    # As written, except that an HTTP error fails the run (curl -s alone exits 0 on a 4xx).
    prelude = "set -euo pipefail\ncurl() { command curl --fail-with-body \"$@\"; echo; }\n"
    result = subprocess.run(["bash", "-c", prelude + script], cwd=tmp_path, capture_output=True, text=True,
                            timeout=600, env={**os.environ, "HOME": str(tmp_path)})
    (ARTIFACTS / "readme-examples.log").write_text(result.stdout + "\n---- stderr\n" + result.stderr)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    answers = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    # What each example is there to show, in the README's order.
    signed_up, me = answers[0], answers[1]
    assert me["user_id"] == signed_up["user"]["id"]  # the rag-service took the access JWT
    saved = next(a for a in answers if str(a.get("message")).startswith("document saved"))
    searched = next(a for a in answers if "results" in a)
    assert searched["results"][0]["document_id"] == saved["document_id"]
    chat = next(a for a in answers if "generator" in a)
    assert (chat["answer_found"], chat["generator"]) == (True, "extractive")
    in_collection = [a for a in answers if a.get("documents") and isinstance(a["documents"], list)]
    assert in_collection[0]["documents"][0]["title"] == "restart"
    assert in_collection[0]["documents"][0]["organization_id"] is not None  # the organization's collection
    batches = [a for a in answers if "items" in a]
    assert [[item["result"] for item in batch["items"]] for batch in batches] == [["created"] * 2] * 2
    assert answers[-1] == {"success": True}  # the account deleted, last
    gone = httpx.post(f"http://127.0.0.1:{dev_stack.auth_port}/auth/login", timeout=30,
                      json={"email": "ada@example.com", "password": "correct horse battery"})
    assert gone.status_code == 401, gone.text
