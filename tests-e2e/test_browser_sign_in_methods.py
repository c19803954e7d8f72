"""Two-factor codes and passkeys in the example web app (examples/web), in headless Chromium
against both real services:

- two-factor codes: set up with the password (the otpauth:// URI and its QR code, ten backup
  codes), confirmed with a first code; a password sign-in then shows the code screen and holds
  no session until a code is given; a used code is refused, a backup code works once. The codes
  come from pyotp reading the URI the page shows, never from the service.
- passkeys: Chromium's virtual authenticators (DevTools protocol, WebAuthn domain) register two,
  one is removed, and the passkey alone signs in; the session's JWT is accepted by the
  rag-service, and it makes API keys and organizations like any other session.
- another relying party: the same credential (same id, same private key) used from a page of
  another host is refused, while the genuine page's assertion, relayed the same way, signs in.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pyotp
import pytest

from browser_support import (
    browser,
    unique_email,
    PASSWORD,
    BrowserStack,
    access_token_from_page,
    app_state,
    browser_pages,
    error_text,
    notice_text,
    rag_documents,
    require_chromium,
    running_browser_stack,
    serving_web_app,
    sign_in,
    sign_up,
    wait_until_loaded,
)


@pytest.fixture(scope="module", autouse=True)
def _chromium_installed() -> None:
    require_chromium()


@pytest.fixture(scope="module")
def browser_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserStack]:
    with serving_web_app() as web_origin, running_browser_stack(
            tmp_path_factory.mktemp("sign-in-methods"), web_origin, "sign-in-methods") as stack:
        yield stack


def sign_out(page) -> None:
    page.click("#sign-out")
    page.wait_for_selector("#auth-view:not([hidden])")


def code_at(totp: pyotp.TOTP, periods: int) -> str:
    """The code of the period `periods` steps from now (the service accepts the previous, current and next)."""
    return totp.at(time.time() + periods * totp.interval)


def enter_code(page, code: str) -> None:
    page.fill("#two-factor-code", code)
    page.click("#two-factor-submit")


def session_token_status(page, auth_url: str) -> int:
    return page.evaluate(
        "async (url) => (await fetch(url + '/api/auth/token', {credentials: 'include'})).status", auth_url)


def test_two_factor_set_up_challenge_replay_and_backup_codes(browser, browser_stack: BrowserStack) -> None:
    email = unique_email("totp")
    with browser_pages(browser, browser_stack.app_url, "two-factor") as pages:
        page = pages.open("totp")
        sign_up(page, email, "Totp User")
        assert "off" in page.inner_text("#two-factor-status")

        page.fill("#two-factor-password", "not my password at all")
        page.click("#two-factor-enable")
        assert "Wrong password" in error_text(page, "Wrong password")

        page.fill("#two-factor-password", PASSWORD)
        page.click("#two-factor-enable")
        page.wait_for_selector("#two-factor-setup:not([hidden])")
        uri = page.inner_text("#totp-uri")
        assert uri.startswith("otpauth://totp/")
        # The QR code is a real image the browser decoded.
        assert page.get_attribute("#totp-qr", "src").startswith("data:image/gif;base64,")
        assert page.evaluate("() => document.getElementById('totp-qr').naturalWidth") > 100
        backup_codes = page.locator("#backup-codes li").all_inner_texts()
        assert len(backup_codes) == 10
        totp = pyotp.parse_uri(uri)
        assert isinstance(totp, pyotp.TOTP)

        page.fill("#two-factor-confirm-code", code_at(totp, 0))
        page.click("#two-factor-confirm")
        notice_text(page, "Two-factor codes are on")
        assert "on" in page.inner_text("#two-factor-status")

        # A password sign-in now stops at the code screen, with no session behind it.
        sign_out(page)
        sign_in(page, email, PASSWORD)
        page.wait_for_selector("#two-factor-view:not([hidden])")
        assert page.is_hidden("#app-view")
        assert session_token_status(page, browser_stack.auth) == 401

        enter_code(page, code_at(totp, 50))
        assert "wrong, expired or already used" in error_text(page, "wrong, expired or already used")
        used = code_at(totp, 1)
        enter_code(page, used)
        wait_until_loaded(page)
        token = access_token_from_page(page, browser_stack.auth)
        with httpx.Client(base_url=browser_stack.rag, timeout=30) as rag:
            assert rag_documents(rag, token) == []

        # The same code again, in a new sign-in: refused.
        sign_out(page)
        sign_in(page, email, PASSWORD)
        page.wait_for_selector("#two-factor-view:not([hidden])")
        enter_code(page, used)
        error_text(page, "already used")
        assert page.is_hidden("#app-view")

        # A backup code signs in once.
        enter_code(page, backup_codes[0])
        wait_until_loaded(page)
        sign_out(page)
        sign_in(page, email, PASSWORD)
        page.wait_for_selector("#two-factor-view:not([hidden])")
        enter_code(page, backup_codes[0])
        error_text(page, "already used")
        enter_code(page, backup_codes[1])
        wait_until_loaded(page)

        # Off again with the password: the password alone signs in.
        page.fill("#two-factor-disable-password", PASSWORD)
        page.click("#two-factor-disable")
        notice_text(page, "Two-factor codes are off")
        sign_out(page)
        sign_in(page, email, PASSWORD)
        wait_until_loaded(page)


def webauthn(page):
    """The page's DevTools session with Chromium's virtual authenticators switched on."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("WebAuthn.enable")
    return cdp


def add_virtual_authenticator(cdp) -> str:
    """A platform authenticator with resident keys and user verification, that always says yes."""
    added = cdp.send("WebAuthn.addVirtualAuthenticator", {"options": {
        "protocol": "ctap2", "transport": "internal", "hasResidentKey": True,
        "hasUserVerification": True, "isUserVerified": True, "automaticPresenceSimulation": True}})
    return added["authenticatorId"]


def test_passkeys_register_list_remove_and_sign_in(browser, browser_stack: BrowserStack) -> None:
    email = unique_email("passkey")
    with browser_pages(browser, browser_stack.app_url, "passkeys") as pages:
        page = pages.open("passkey")
        cdp = webauthn(page)
        laptop = add_virtual_authenticator(cdp)
        sign_up(page, email, "Passkey User")
        assert page.locator("#passkeys li").count() == 0

        def register(name: str, count: int) -> None:
            page.fill("#passkey-name", name)
            page.click("#passkey-add")
            page.wait_for_function("(n) => document.querySelectorAll('#passkeys li').length === n", arg=count)

        register("laptop", 1)
        [laptop_key] = cdp.send("WebAuthn.getCredentials", {"authenticatorId": laptop})["credentials"]
        assert laptop_key["rpId"] == "localhost" and laptop_key["isResidentCredential"]
        # A second device: one authenticator at a time (the first would refuse to hold a second
        # passkey of the same account, as WebAuthn's excludeCredentials asks).
        cdp.send("WebAuthn.removeVirtualAuthenticator", {"authenticatorId": laptop})
        phone = add_virtual_authenticator(cdp)
        register("phone", 2)
        assert page.locator("#passkeys li .title").all_inner_texts() == ["laptop", "phone"]

        # The phone is lost: its passkey is removed, and the laptop comes back.
        page.locator("#passkeys li", has_text="phone").locator("button.delete").click()
        notice_text(page, 'Removed the passkey "phone"')
        assert page.locator("#passkeys li .title").all_inner_texts() == ["laptop"]
        cdp.send("WebAuthn.removeVirtualAuthenticator", {"authenticatorId": phone})
        laptop = add_virtual_authenticator(cdp)
        cdp.send("WebAuthn.addCredential", {"authenticatorId": laptop, "credential": laptop_key})

        # The passkey alone signs in: no email, no password.
        sign_out(page)
        page.fill("#email", "")
        page.click("#passkey-sign-in")
        wait_until_loaded(page)
        assert email in page.inner_text("#user-email")
        token = access_token_from_page(page, browser_stack.auth)
        with httpx.Client(base_url=browser_stack.rag, timeout=30) as rag:
            assert rag_documents(rag, token) == []
            # An API key made by the passkey session is exchanged for a JWT the rag-service accepts.
            created = page.evaluate(
                """async (url) => { const r = await fetch(url + '/auth/api-keys', {method: 'POST', credentials: 'include',
                     headers: {'Content-Type': 'application/json'}, body: JSON.stringify({name: 'ci', scope: 'read'})});
                   return {status: r.status, body: await r.json()}; }""", browser_stack.auth)
            assert created["status"] == 201, created
            exchanged = httpx.post(f"{browser_stack.auth}/auth/token", headers={"x-api-key": created["body"]["key"]})
            assert exchanged.status_code == 200, exchanged.text
            assert rag_documents(rag, exchanged.json()["access_token"]) == []
        # Organizations too: one created by the passkey session is in its next token, as owner.
        page.fill("#org-name", "Passkey Lab")
        page.click("#org-create")
        notice_text(page, "Created Passkey Lab")
        org_id = app_state(page, "activeOrganizationId")
        assert app_state(page, "orgs") == [{"id": org_id, "role": "owner"}]


ASSERT_JS = """async ({options, rpId}) => {
  const publicKey = PublicKeyCredential.parseRequestOptionsFromJSON({...options, rpId});
  return (await navigator.credentials.get({publicKey})).toJSON();
}"""


def relayed_sign_in(page, auth_url: str, trusted_origin: str, rp_id: str) -> httpx.Response:
    """The service's challenge, signed on `page` for `rp_id`, sent back by a client that sets
    whatever Origin it likes (what a relaying phishing proxy does)."""
    with httpx.Client(base_url=auth_url, timeout=30) as client:
        options = client.get("/api/auth/passkey/generate-authenticate-options")
        assert options.status_code == 200, options.text
        assertion = page.evaluate(ASSERT_JS, {"options": options.json(), "rpId": rp_id})
        return client.post("/api/auth/passkey/verify-authentication", json={"response": assertion},
                           headers={"Origin": trusted_origin})


def test_a_passkey_of_another_relying_party_is_refused(browser, browser_stack: BrowserStack) -> None:
    email = unique_email("rp")
    with browser_pages(browser, browser_stack.app_url, "passkey-rp") as pages:
        page = pages.open("genuine")
        cdp = webauthn(page)
        authenticator = add_virtual_authenticator(cdp)
        sign_up(page, email, "Relying Party")
        page.click("#passkey-add")
        notice_text(page, "Passkey added")
        [credential] = cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator})["credentials"]

        # Control: the genuine page's assertion, relayed by the harness, signs in.
        genuine = relayed_sign_in(page, browser_stack.auth, browser_stack.web, "localhost")
        assert genuine.status_code == 200, genuine.text
        assert genuine.json()["user"]["email"] == email

        # The same key pair and credential id, held for another relying party (another host).
        port = browser_stack.web.rsplit(":", 1)[1]
        other = pages.browser.new_context().new_page()
        pages.pages["other-rp"] = other
        other.goto(f"http://other-rp.localhost:{port}/index.html")
        other_cdp = webauthn(other)
        other_authenticator = add_virtual_authenticator(other_cdp)
        other_cdp.send("WebAuthn.addCredential", {"authenticatorId": other_authenticator, "credential": {
            "credentialId": credential["credentialId"], "isResidentCredential": True, "rpId": "other-rp.localhost",
            "privateKey": credential["privateKey"], "userHandle": credential["userHandle"],
            "signCount": credential["signCount"] + 10}})
        refused = relayed_sign_in(other, browser_stack.auth, browser_stack.web, "other-rp.localhost")
        assert refused.status_code == 400, refused.text
        assert refused.json()["code"] == "AUTHENTICATION_FAILED"
        assert "session_token" not in refused.headers.get("set-cookie", "")
