"""The example web app (examples/web) in headless Chromium against both real services.

One journey, as a user would take it: sign up, upload a .txt, see it listed, ask a question,
watch the streamed answer, click its citation, open the history, survive a rejected token
(401 -> re-mint -> retry) and a scheduled token refresh, a second user in another browser
context sees nothing of the first user's data (and the API answers 404 for it), a wrong
password and a rate-limited sign-in are shown in words, sign out ends the session.

The stack, the static server and Chromium come from browser_support.py (shared with
test_browser_teams.py); this module runs them with short-lived tokens and a low sign-in limit.
"""

from __future__ import annotations

import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from browser_support import (
    browser,
    ARTIFACTS,
    BrowserStack,
    access_token_from_page,
    app_state,
    ask,
    browser_pages,
    error_text,
    rag_documents,
    require_chromium,
    running_browser_stack,
    serving_web_app,
    sign_in,
    sign_up,
)
from stack import ROOT

# The README picture is taken on every run into the artifacts; REFRESH_SCREENSHOT=1
# (`make screenshot`) also copies it over the tracked docs/screenshot.png.
SCREENSHOT = ARTIFACTS / "screenshot.png"
README_SCREENSHOT = ROOT / "docs" / "screenshot.png"

# Short-lived access tokens so the app's scheduled refresh (60 s before `exp`) is observable.
JWT_LIFETIME_S = 75
# Sign-in attempts per minute and IP before the auth-service answers 429.
SIGNIN_LIMIT = 5
# Uploads above this many bytes are refused with 413.
MAX_UPLOAD_BYTES = 100_000

# The auth-service's minimum length of a new password (the web form's minlength must match).
PASSWORD_MIN = int(re.search(r"PASSWORD_MIN = (\d+);",
                             (ROOT / "auth-service" / "src" / "input-policy.ts").read_text()).group(1))

DOCUMENT_TITLE = "zephyria-notes"
DOCUMENT_TEXT = (
    "Zephyria travel notes.\n\n"
    "The capital city of Zephyria is Lumenport, a harbour town built on basalt cliffs. "
    "Lumenport is famous for its glass lighthouses, which glow blue during the winter festival.\n\n"
    "The national dish of Zephyria is smoked kelp bread, baked in clay ovens along the coast. "
    "Travellers should carry a wool coat because the northern wind, called the Skarn, is cold all year.\n"
)
QUESTION = "What is the capital city of Zephyria?"


@pytest.fixture(scope="module", autouse=True)
def _chromium_installed() -> None:
    require_chromium()


@pytest.fixture(scope="module")
def web_origin() -> Iterator[str]:
    with serving_web_app() as origin:
        yield origin


@pytest.fixture(scope="module")
def browser_stack(tmp_path_factory: pytest.TempPathFactory, web_origin: str) -> Iterator[BrowserStack]:
    with running_browser_stack(tmp_path_factory.mktemp("browser-stack"), web_origin, "browser",
                               auth_env={"JWT_EXPIRES_IN": f"{JWT_LIFETIME_S}s",
                                         "AUTH_RATE_LIMIT_SIGNIN_MAX": str(SIGNIN_LIMIT)},
                               rag_env={"MAX_UPLOAD_BYTES": str(MAX_UPLOAD_BYTES)}) as stack:
        yield stack


# ---- the journey --------------------------------------------------------------------------


def test_browser_journey(browser, browser_stack: BrowserStack, tmp_path: Path) -> None:
    stack = browser_stack
    email1 = f"alice-{uuid.uuid4().hex[:8]}@example.com"
    email2 = f"bob-{uuid.uuid4().hex[:8]}@example.com"
    with browser_pages(browser, stack.app_url) as pages:
        # --- a password shorter than the auth-service's minimum is refused, said in words ---
        page = pages.open("user1")
        page.fill("#email", email1)
        page.fill("#password", "x" * (PASSWORD_MIN - 1))
        page.click("#sign-up")
        assert f"at least {PASSWORD_MIN} characters" in error_text(page, "at least")
        assert page.is_hidden("#app-view")

        # --- user 1 signs up: session cookie + access JWT minted from it ---------------------
        sign_up(page, email1, "Alice")
        first_exp = app_state(page, "tokenExp")
        assert 0 < first_exp - time.time() <= JWT_LIFETIME_S + 5

        # --- upload a .txt through the file input and see it listed --------------------------
        doc_path = tmp_path / f"{DOCUMENT_TITLE}.txt"
        doc_path.write_text(DOCUMENT_TEXT)
        binary_path = tmp_path / "photo.jpg"
        binary_path.write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)))
        page.set_input_files("#file-input", [str(doc_path), str(binary_path)])
        page.click("#upload")
        doc_item = page.locator("#documents li.doc", has_text=DOCUMENT_TITLE)
        doc_item.wait_for()
        # One result per file: the text file added, the binary one refused with the reason.
        page.wait_for_selector("#upload-results li[data-result='error']")
        assert DOCUMENT_TITLE in page.inner_text("#upload-results li[data-result='created']")
        refused_line = page.inner_text("#upload-results li[data-result='error']")
        assert "photo.jpg" in refused_line and "binary content" in refused_line, refused_line
        page.locator("#upload-progress").wait_for(state="hidden")
        page.wait_for_selector("#documents li.doc[data-status='ready']", timeout=60_000)
        doc_id = doc_item.get_attribute("data-id")
        assert doc_id

        # --- an oversized upload is refused with 413, shown in words ------------------------
        big_path = tmp_path / "too-big.txt"
        big_path.write_text("big file line\n" * (MAX_UPLOAD_BYTES // 14 + 2000))
        page.set_input_files("#file-input", str(big_path))
        with page.expect_response(lambda r: r.url.endswith("/documents/upload")) as refused:
            page.click("#upload")
        assert refused.value.status == 413
        message = error_text(page, "too large")
        assert "too-big.txt" in message and str(MAX_UPLOAD_BYTES) in message, message
        assert page.locator("#documents li.doc").count() == 1

        # --- ask: the answer streams in over SSE, with a numbered citation -------------------
        ask(page, QUESTION)
        assert page.get_attribute("#answer", "data-state") == "done", page.inner_text("#message")
        answer = page.inner_text("#answer")
        assert "Lumenport" in answer
        citations = page.locator("#answer button.cite")
        assert citations.count() >= 1
        assert page.locator("#sources li").count() >= 1
        # The mode is shown; the answer was found, so its sources are listed.
        assert "Extractive answer" in page.inner_text("#answer-mode")
        assert page.get_attribute("#answer", "data-found") == "true"
        assert page.is_visible("#sources-block")

        # --- click the citation: its source (title and snippet) is shown and highlighted ----
        n = citations.first.get_attribute("data-n")
        citations.first.click()
        detail = page.locator("#source-detail")
        detail.wait_for()
        assert DOCUMENT_TITLE in detail.inner_text()
        assert detail.locator(".snippet").inner_text().strip()
        assert page.locator(f"#sources li.active[data-n='{n}']").count() == 1
        conversation_id = app_state(page, "conversationId")
        assert conversation_id

        # --- history lists the conversation; opening it shows both messages ------------------
        page.wait_for_selector(f"#history li[data-id='{conversation_id}']")
        page.click(f"#history li[data-id='{conversation_id}'] button")
        page.wait_for_selector("#conversation .msg.assistant")
        assert QUESTION in page.inner_text("#conversation .msg.user")
        assert "Lumenport" in page.inner_text("#conversation .msg.assistant")

        # --- a rejected access token: the app re-mints once and retries the call -------------
        mints = app_state(page, "tokenMints")
        page.evaluate("() => { const s = window.ragApp.state;"
                      " s.token = s.token.split('.').slice(0, 2).join('.') + '.invalid-signature'; }")
        with page.expect_response(lambda r: "/history/" in r.url and r.status == 401):
            page.click(f"#history li[data-id='{conversation_id}'] button")
        page.wait_for_function("(m) => window.ragApp.state.tokenMints > m", arg=mints)
        page.wait_for_selector("#conversation .msg.assistant")
        assert page.is_hidden("#message"), page.inner_text("#message")
        assert not app_state(page, "token").endswith(".invalid-signature")

        # --- the app refreshes the JWT ~60 s before `exp` without being asked ---------------
        exp_before = app_state(page, "tokenExp")
        page.wait_for_function("(e) => window.ragApp.state.tokenExp > e", arg=exp_before,
                               timeout=(JWT_LIFETIME_S - 60 + 20) * 1000)

        # The picture for the README: answer, highlighted source, history.
        page.locator("#answer button.cite").first.click()
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)
        if os.environ.get("REFRESH_SCREENSHOT") == "1":
            shutil.copyfile(SCREENSHOT, README_SCREENSHOT)

        # --- user 2 in another browser context sees nothing of user 1 -----------------------
        page2 = pages.open("user2")
        sign_up(page2, email2, "Bob")
        page2.wait_for_selector("#documents-empty:not([hidden])")
        page2.wait_for_selector("#history-empty:not([hidden])")
        assert page2.locator("#documents li").count() == 0
        assert page2.locator("#history li").count() == 0
        ask(page2, QUESTION)
        assert "Lumenport" not in page2.inner_text("#answer")
        assert DOCUMENT_TITLE not in page2.inner_text("#sources")
        # Nothing of Bob's answers it: "not found", said in the mode line, with no sources shown.
        assert page2.get_attribute("#answer", "data-found") == "false"
        assert "not found" in page2.inner_text("#answer-mode")
        assert page2.is_hidden("#sources-block")

        token1 = access_token_from_page(page, stack.auth)
        token2 = access_token_from_page(page2, stack.auth)
        with httpx.Client(base_url=stack.rag, timeout=30) as api:
            for path in (f"/documents/{doc_id}", f"/history/{conversation_id}"):
                own = api.get(path, headers={"Authorization": f"Bearer {token1}"})
                assert own.status_code == 200, (path, own.text)
                other = api.get(path, headers={"Authorization": f"Bearer {token2}"})
                assert other.status_code == 404, (path, other.text)
                assert other.json()["error"]["code"] == "not_found"
            assert all(doc.get("id", doc.get("document_id")) != doc_id for doc in rag_documents(api, token2))

        # --- sign out: the session cookie no longer works, a reload stays signed out --------
        page.click("#sign-out")
        page.wait_for_selector("#auth-view:not([hidden])")
        assert page.is_hidden("#app-view")
        page.reload()
        page.wait_for_selector("#auth-view:not([hidden])")
        status = page.evaluate(
            "async (url) => (await fetch(url + '/api/auth/token', {credentials: 'include'})).status",
            stack.auth)
        assert status == 401

        # --- wrong password: said in words; then too many attempts: 429 with the wait -------
        sign_in(page, email1, "not the password at all")
        assert "Wrong email or password" in error_text(page, "Wrong email or password")
        assert page.is_hidden("#app-view")
        for _ in range(SIGNIN_LIMIT + 1):
            sign_in(page, email1, "still not the password")
            page.wait_for_function("() => !document.getElementById('message').hidden")
            if "Too many requests" in page.inner_text("#message"):
                break
        message = error_text(page, "Too many requests")
        assert "wait" in message and "second" in message, message


# ---- reading: what a search and an answer lead to ---------------------------------------------

GUIDE_FILE = "zephyria-2026.html"
GUIDE_TITLE = "Zephyria travel guide"
GUIDE_HTML = (f"<html><head><title>{GUIDE_TITLE}</title></head><body><h1>Harbours</h1>"
              "<p>The harbour master of Lumenport rings the basalt bell at dawn.</p>"
              "<p>Ferries to the northern isles leave from the glass pier every second morning.</p></body></html>")
# A stream split where a hand-written splitter broke: "\r" ends one network chunk, "\n" starts
# the next (one line end, not two), and a field name split in two.
SPLIT_STREAM = ["event: delta\r", "\ndata: {\"text\": \"one\"}\r\n\r", "\nevent: del", "ta\r\ndata: {\"text\": \"two\"}\r\n",
                "\r\n: keep-alive\r\n\r\nevent: done\ndata: {}\n\n"]


def test_reading_an_answer_and_a_search(browser, browser_stack: BrowserStack, tmp_path: Path) -> None:
    with browser_pages(browser, browser_stack.app_url, "browser-reading") as pages:
        page = pages.open("reader")
        sign_up(page, f"reader-{uuid.uuid4().hex[:8]}@example.com", "Reader")

        # --- the chat stream's parser: events whatever the network chunks ----------------------
        events = page.evaluate("""async (chunks) => {
            const bytes = new TextEncoder();
            const body = new ReadableStream({ start(c) { for (const x of chunks) c.enqueue(bytes.encode(x)); c.close(); } });
            const seen = [];
            for await (const e of window.ragApp.readSse(body)) seen.push(e);
            return seen; }""", SPLIT_STREAM)
        assert events == [{"event": "delta", "data": '{"text": "one"}'}, {"event": "delta", "data": '{"text": "two"}'},
                          {"event": "done", "data": "{}"}]

        # --- an upload lists its file's name beside the title its content gives ---------------
        guide = tmp_path / GUIDE_FILE
        guide.write_text(GUIDE_HTML)
        page.set_input_files("#file-input", str(guide))
        page.click("#upload")
        row = page.locator("#documents li.doc[data-status='ready']", has_text=GUIDE_TITLE)
        row.wait_for(timeout=60_000)
        assert row.locator("[data-testid='file-name']").inner_text() == GUIDE_FILE

        # --- a search, then a question: the answer does not sit below the old results ---------
        page.fill("#question", "basalt bell")
        page.click("#search")
        page.wait_for_selector("#search-results[data-state='done'] li.hit")
        assert page.locator("#search-results li.hit [data-testid='file-name']").first.inner_text() == GUIDE_FILE
        ask(page, "Who rings the basalt bell at dawn?")
        assert page.locator("#search-results li").count() == 0
        # The mode that produced it is said.
        assert page.inner_text("#answer-mode").startswith("Extractive answer")

        # --- a source opens the document's whole text, its passage marked ----------------------
        assert page.locator("#sources li [data-testid='file-name']").first.inner_text() == GUIDE_FILE
        page.locator("#answer button.cite").first.click()
        text = page.locator("#source-detail [data-testid='document-text'][data-state='done']")
        text.wait_for()
        assert GUIDE_FILE in text.locator("h5").inner_text()
        whole = text.locator(".document-body").inner_text()
        assert "harbour master of Lumenport" in whole and "Ferries to the northern isles" in whole
        assert "basalt bell" in text.locator("mark").inner_text()

        # --- a long title wraps: no sideways scroll on a 400 px screen --------------------------
        long_question = "Where does " + "the-very-long-harbour-road-" * 8 + "end?"
        page.click("#new-conversation")  # its title is its first question
        ask(page, long_question)
        page.set_viewport_size({"width": 400, "height": 800})
        history_item = page.locator("#history li button", has_text="the-very-long-harbour-road")
        history_item.first.wait_for()
        wider = page.evaluate("""() => [...document.querySelectorAll('body *')]
            .filter((e) => e.offsetParent !== null && e.getBoundingClientRect().right > 401)
            .map((e) => `${e.tagName}#${e.id}.${e.className} ${Math.round(e.getBoundingClientRect().right)}`)""")
        assert page.evaluate("() => document.documentElement.scrollWidth") <= 400, wider
        assert history_item.first.bounding_box()["width"] <= 400

