"""Shared by the browser tests (test_browser.py, test_browser_teams.py): the example web app
served from examples/web, both real services trusting its origin, headless Chromium, pages
that keep their console output and failure artifacts, and what a test does on a page (sign
up, sign in, read the error banner and the app's state, ask a question).

Chromium is Debian's /usr/bin/chromium (scripts/install-chromium.sh), driven by Playwright
for Python from the rag-service venv; nothing is downloaded. The app, both services and the
JWT issuer all use `localhost`, so the auth-service's session cookie is same-site with the page.
"""

from __future__ import annotations

import functools
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from conftest import ARTIFACTS, missing
from stack import ROOT, Service, free_port, start_auth, start_rag

PASSWORD = "correct horse battery staple"
CHROMIUM = Path("/usr/bin/chromium")
WEB_DIR = ROOT / "examples" / "web"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def require_chromium() -> None:
    if not CHROMIUM.exists():
        missing("/usr/bin/chromium is missing: run scripts/install-chromium.sh (apt-get install chromium)")


@dataclass
class BrowserStack:
    web: str  # origin of the static server, e.g. http://localhost:5173
    auth: str  # auth-service as the browser sees it (localhost)
    rag: str  # rag-service as the browser sees it (localhost)
    auth_service: Service
    rag_service: Service

    @property
    def app_url(self) -> str:
        return f"{self.web}/?auth={self.auth}&rag={self.rag}"


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass


@contextmanager
def serving_web_app() -> Iterator[str]:
    """`python -m http.server` equivalent for examples/web on a free port; yields its origin."""
    handler = functools.partial(_QuietHandler, directory=str(WEB_DIR))
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://localhost:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def running_browser_stack(data: Path, web_origin: str, name: str, auth_env: dict[str, str] | None = None,
                          rag_env: dict[str, str] | None = None, auth_port: int | None = None) -> Iterator[BrowserStack]:
    """Both services, trusting the app's origin, with the issuer and URLs on `localhost`. The
    auth-service's mail links (APP_URL) open the app configured for these two services.
    `auth_port`: the auth-service's port when something must know it beforehand (an identity
    provider's redirect URI)."""
    auth_port, rag_port = auth_port or free_port(), free_port()
    auth_public = f"http://localhost:{auth_port}"
    app_url = f"{web_origin}/?auth={auth_public}&rag=http://localhost:{rag_port}"
    auth = start_auth(data / "auth", ARTIFACTS, name=f"auth-{name}", port=auth_port,
                      BETTER_AUTH_URL=auth_public, TRUSTED_ORIGINS=web_origin,
                      **{"APP_URL": app_url, **(auth_env or {})})
    rag = None
    try:
        rag = start_rag(data / "rag", ARTIFACTS, auth_public, name=f"rag-{name}", port=rag_port,
                        CORS_ORIGINS=web_origin, **(rag_env or {}))
        rag_public = rag.url.replace("127.0.0.1", "localhost")
        yield BrowserStack(web=web_origin, auth=auth_public, rag=rag_public, auth_service=auth, rag_service=rag)
    finally:
        if rag:
            rag.stop()
        auth.stop()


@contextmanager
def chromium() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()


class BrowserPages:
    """The pages a test opened, each in its own browser context (its own cookies), and what
    their consoles printed."""

    def __init__(self, browser, app_url: str) -> None:
        self.browser = browser
        self.app_url = app_url
        self.console: list[str] = []
        self.pages: dict[str, object] = {}

    def open(self, name: str):
        """A signed-out page of the app."""
        context = self.browser.new_context(viewport={"width": 1400, "height": 900})
        page = context.new_page()
        page.set_default_timeout(20_000)
        page.on("console", lambda m: self.console.append(f"[{name}] {m.type}: {m.text}"))
        page.on("pageerror", lambda e: self.console.append(f"[{name}] pageerror: {e}"))
        self.pages[name] = page
        page.goto(self.app_url)
        page.wait_for_selector("#auth-view:not([hidden])")
        return page


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """One headless Chromium per test module: a module imports this fixture by name."""
    with chromium() as instance:
        yield instance


def unique_email(who: str) -> str:
    return f"{who}-{uuid.uuid4().hex[:8]}@example.com"


@contextmanager
def browser_pages(browser, app_url: str, artifacts_prefix: str = "browser") -> Iterator[BrowserPages]:
    """Pages of the app; on failure every page's screenshot and the console output are kept
    (tests-e2e/artifacts/<prefix>-failure-<page>.png, <prefix>-console.log)."""
    pages = BrowserPages(browser, app_url)
    try:
        yield pages
    except BaseException:
        save_failure_artifacts(pages.pages, pages.console, artifacts_prefix)
        raise
    finally:
        for page in pages.pages.values():
            page.context.close()


def sign_up(page, email: str, name: str) -> None:
    page.fill("#email", email)
    page.fill("#password", PASSWORD)
    page.fill("#name", name)
    page.click("#sign-up")
    wait_until_loaded(page)
    assert email in page.inner_text("#user-email")


def wait_until_loaded(page) -> None:
    """Signed in, and the first load (organizations, collections, documents, history) is over."""
    page.wait_for_selector("#app-view[data-loaded='true']:not([hidden])")


def sign_in(page, email: str, password: str) -> None:
    page.fill("#email", email)
    page.fill("#password", password)
    page.click("#sign-in")


def error_text(page, contains: str, timeout: float = 15_000) -> str:
    """Waits until the app's error banner shows `contains`, and returns the whole sentence."""
    page.wait_for_function(
        "(t) => { const m = document.getElementById('message'); return !m.hidden && m.textContent.includes(t); }",
        arg=contains, timeout=timeout)
    return page.inner_text("#message")


def app_state(page, expression: str):
    return page.evaluate(f"() => window.ragApp.state.{expression}")


def access_token_from_page(page, auth_url: str) -> str:
    """What the app does: its session cookie -> GET /api/auth/token -> access JWT."""
    result = page.evaluate(
        "async (url) => { const r = await fetch(url + '/api/auth/token', {credentials: 'include'});"
        " return {status: r.status, body: await r.json()}; }", auth_url)
    assert result["status"] == 200, result
    return result["body"]["token"]


def ask(page, question: str) -> None:
    page.fill("#question", question)
    with page.expect_response(lambda r: r.url.endswith("/chat") and r.request.method == "POST") as chat:
        page.click("#ask")
    response = chat.value
    assert response.status == 200, response.text()
    assert response.headers["content-type"].startswith("text/event-stream")
    page.wait_for_selector("#answer[data-state='done'], #answer[data-state='failed']", timeout=60_000)


def notice_text(page, contains: str, timeout: float = 15_000) -> str:
    """Waits until the app's notice (the blue line) shows `contains`, and returns it."""
    page.wait_for_function(
        "(t) => { const m = document.getElementById('notice'); return !m.hidden && m.textContent.includes(t); }",
        arg=contains, timeout=timeout)
    return page.inner_text("#notice")


def rag_documents(api: httpx.Client, token: str, **params: str) -> list[dict]:
    """GET /documents as `token`'s user (the rag-service answers {"documents": [...]})."""
    response = api.get("/documents", params=params, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    data = response.json()
    return data if isinstance(data, list) else data.get("documents", data.get("items", []))


def save_failure_artifacts(pages: dict[str, object], console: list[str], prefix: str = "browser") -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for name, page in pages.items():
        try:
            page.screenshot(path=str(ARTIFACTS / f"{prefix}-failure-{name}.png"), full_page=True)
        except Exception as exc:  # the page may be gone; keep the other artifacts
            console.append(f"[screenshot of {name} failed: {exc}]")
    (ARTIFACTS / f"{prefix}-console.log").write_text("\n".join(console))
