"""What the browser test (test_browser.py) does on a page of the example web app: sign up,
sign in, read the error banner and the app's state, ask a question, keep failure artifacts."""

from __future__ import annotations

from conftest import ARTIFACTS

PASSWORD = "correct horse battery staple"


def sign_up(page, email: str, name: str) -> None:
    page.fill("#email", email)
    page.fill("#password", PASSWORD)
    page.fill("#name", name)
    page.click("#sign-up")
    page.wait_for_selector("#app-view:not([hidden])")
    assert email in page.inner_text("#user-email")


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


def save_failure_artifacts(pages: dict[str, object], console: list[str]) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for name, page in pages.items():
        try:
            page.screenshot(path=str(ARTIFACTS / f"browser-failure-{name}.png"), full_page=True)
        except Exception as exc:  # the page may be gone; keep the other artifacts
            console.append(f"[screenshot of {name} failed: {exc}]")
    (ARTIFACTS / "browser-console.log").write_text("\n".join(console))
