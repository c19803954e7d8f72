"""Single sign-on against a real OpenID Connect provider: the certified `oidc-provider` package
(auth-service/dev/oidc-provider.ts) on loopback, both real services and the example app.

In headless Chromium: the app's "Sign in with Local OIDC" button, the redirect (state, PKCE
S256, nonce), login and consent at the provider, the callback, the session, an access JWT the
rag-service accepts; a second sign-in is the same account; an organization invitation mailed
to an address is accepted by the SSO account; an unverified address at the provider is refused
against an existing account (the app says why) and a verified one links to it.

As a browser would, with an HTTP client walking the provider's forms, the protocol refusals:
a tampered state, a state from another browser, a wrong issuer (RFC 9207 `iss`), a replayed
authorization code.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit, urlunsplit

import httpx
import jwt
import psycopg
import pytest

from browser_support import (
    browser,
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
    wait_until_loaded,
)
from conftest import ARTIFACTS, sign_up
from stack import Service, free_port, start_oidc_provider

PROVIDER_ID = "local"
CLIENT_ID = "rag-e2e"
CLIENT_SECRET = uuid.uuid4().hex
RUN = uuid.uuid4().hex[:8]


def address(who: str) -> str:
    return f"{who}-{RUN}@example.com"


# The provider's people: login -> (email, email_verified).
PEOPLE = {
    "alice": (address("alice"), True),
    "ivy": (address("ivy"), True),
    "refusals": (address("refusals"), True),
    # Claims the address of an existing, verified password account without having verified it.
    "mallory": (address("victim"), False),
    # The owner of an existing, verified password account, verified at the provider too.
    "victor": (address("victor"), True),
    # Verified at the provider; the password account with this address never confirmed it.
    "uma": (address("unconfirmed"), True),
}


@pytest.fixture(scope="module", autouse=True)
def _chromium_installed() -> None:
    require_chromium()


@dataclass
class SsoStack:
    browser: BrowserStack
    provider: Service
    database_url: str  # the auth-service's (Postgres: the tests read what it stores)

    @property
    def auth(self) -> str:
        return self.browser.auth

    @property
    def issuer(self) -> str:
        return self.provider.url


@pytest.fixture(scope="module")
def sso(tmp_path_factory: pytest.TempPathFactory, make_postgres_database: Callable[[], str]) -> Iterator[SsoStack]:
    auth_port, database_url = free_port(), make_postgres_database()
    provider = start_oidc_provider(
        ARTIFACTS, [f"http://localhost:{auth_port}/api/auth/callback/{PROVIDER_ID}"],
        [{"login": login, "email": email, "email_verified": verified, "name": login.title()}
         for login, (email, verified) in PEOPLE.items()],
        CLIENT_ID, CLIENT_SECRET, name="oidc-provider-sso")
    providers = [{"type": "oidc", "id": PROVIDER_ID, "name": "Local OIDC", "issuer": provider.url,
                  "clientId": CLIENT_ID, "clientSecret": CLIENT_SECRET}]
    try:
        with serving_web_app() as web_origin, running_browser_stack(
                tmp_path_factory.mktemp("sso-stack"), web_origin, "sso", auth_port=auth_port,
                auth_env={"OIDC_PROVIDERS": json.dumps(providers), "DATABASE_URL": database_url}) as stack:
            yield SsoStack(browser=stack, provider=provider, database_url=database_url)
    finally:
        provider.stop()


# ---- the auth-service's development mailbox (no SMTP_URL: mails land in its outbox) -----------
def mailed_link(auth_url: str, email: str, subject: str) -> str:
    deadline = time.monotonic() + 20
    while True:  # delivery is queued: the mail lands shortly after the request is answered
        listed = httpx.get(f"{auth_url}/dev/mailbox", headers={"Accept": "application/json"}, timeout=10)
        assert listed.status_code == 200, listed.text
        mails = [m for m in listed.json()["mails"] if m["to"] == email and subject in m["subject"]]
        if mails or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert len(mails) == 1, listed.json()
    mail = httpx.get(f"{auth_url}/dev/mailbox/{mails[0]['id']}", headers={"Accept": "application/json"}, timeout=10)
    links = re.findall(r"https?://\S+#\S+", mail.json()["text"])
    assert len(links) == 1, mail.json()["text"]
    return links[0]


def password_account(auth_url: str, email: str, confirmed: bool) -> str:
    """A password account (its user id), its address confirmed through the mailed link or not."""
    user_id = sign_up(auth_url, email=email)["user"]["id"]
    if confirmed:
        token = mailed_link(auth_url, email, "Confirm your email address").split("#verify-email=", 1)[1]
        verified = httpx.get(f"{auth_url}/api/auth/verify-email", params={"token": token}, timeout=10)
        assert verified.status_code == 200, verified.text
    return user_id


def linked_providers(auth_url: str, email: str) -> list[str]:
    """The sign-in methods of a password account, as its owner sees them (GET /list-accounts)."""
    login = httpx.post(f"{auth_url}/auth/login", json={"email": email, "password": "correct horse battery"}, timeout=30)
    assert login.status_code == 200, login.text
    accounts = httpx.get(f"{auth_url}/api/auth/list-accounts", timeout=10,
                         headers={"Authorization": f"Bearer {login.json()['session_token']}"})
    assert accounts.status_code == 200, accounts.text
    return sorted(a["providerId"] for a in accounts.json())


# ---- in Chromium: the app, the provider's pages, back ------------------------------------------
def sign_in_at_provider(page, issuer: str, login: str) -> None:
    """On the provider's development pages: log in as `login` (any password), then consent."""
    page.wait_for_url(f"{issuer}/interaction/**")
    page.fill("input[name=login]", login)
    page.fill("input[name=password]", "whatever the provider accepts")
    page.click("button.login-submit")
    page.wait_for_selector("input[name=prompt][value=consent]", state="attached")
    page.click("button.login-submit")  # "Continue": openid, email, profile for the app


def click_sso(page, issuer: str) -> str:
    """Clicks the app's button; returns the authorization request the browser was sent to."""
    with page.expect_request(lambda r: r.url.startswith(f"{issuer}/auth?")) as authorization:
        page.click(f"#sso-buttons button[data-provider={PROVIDER_ID}]")
    return authorization.value.url


def test_sign_up_and_in_through_the_provider_in_chromium(browser, sso: SsoStack) -> None:
    stack = sso.browser
    email = PEOPLE["alice"][0]
    with browser_pages(browser, stack.app_url, "sso-sign-in") as pages:
        page = pages.open("alice")
        assert page.inner_text("#sso-buttons").strip() == "Sign in with Local OIDC"

        request = urlsplit(click_sso(page, sso.issuer))
        query = {k: v[0] for k, v in parse_qs(request.query).items()}
        assert query["client_id"] == CLIENT_ID
        assert query["redirect_uri"] == f"{stack.auth}/api/auth/callback/{PROVIDER_ID}"
        assert query["response_type"] == "code"
        assert set(query["scope"].split()) >= {"openid", "email", "profile"}
        assert query["code_challenge_method"] == "S256" and len(query["code_challenge"]) == 43
        assert len(query["state"]) >= 32 and len(query["nonce"]) >= 32

        sign_in_at_provider(page, sso.issuer, "alice")
        wait_until_loaded(page)
        assert email in page.inner_text("#user-email")
        assert page.url.startswith(stack.web), "back in the app"

        # The session mints the same access JWT as a password sign-in, and the rag-service takes it.
        token = access_token_from_page(page, stack.auth)
        claims = jwt.decode(token, options={"verify_signature": False})
        session = page.evaluate("async (u) => (await fetch(u + '/api/auth/get-session', {credentials: 'include'})).json()", stack.auth)
        assert claims["sub"] == session["user"]["id"] and claims["iss"] == stack.auth and claims["aud"] == "rag-service"
        assert session["user"]["emailVerified"] is True, "the provider verified the address"
        with httpx.Client(base_url=stack.rag_service.url, timeout=30) as api:
            assert rag_documents(api, token) == []
            assert api.get("/me", headers={"Authorization": f"Bearer {token}"}).json()["user_id"] == claims["sub"]

        # Signed out and in again: the provider remembers the person, the app gets the same account.
        page.click("#sign-out")
        page.wait_for_selector("#auth-view:not([hidden])")
        click_sso(page, sso.issuer)
        wait_until_loaded(page)
        again = access_token_from_page(page, stack.auth)
        assert jwt.decode(again, options={"verify_signature": False})["sub"] == claims["sub"]


def test_an_invitation_is_accepted_by_an_sso_account(browser, sso: SsoStack) -> None:
    stack = sso.browser
    invitee = PEOPLE["ivy"][0]
    owner_session = sign_up(stack.auth, email=address("owner"))["session_token"]
    owner = {"Authorization": f"Bearer {owner_session}"}
    org = httpx.post(f"{stack.auth}/api/auth/organization/create", headers=owner, timeout=30,
                     json={"name": "Saltmarsh Lab", "slug": f"saltmarsh-{RUN}"})
    assert org.status_code == 200, org.text
    invited = httpx.post(f"{stack.auth}/api/auth/organization/invite-member", headers=owner, timeout=30,
                         json={"organizationId": org.json()["id"], "email": invitee, "role": "member"})
    assert invited.status_code == 200, invited.text
    link = mailed_link(stack.auth, invitee, "You are invited to join Saltmarsh Lab")

    with browser_pages(browser, stack.app_url, "sso-invitation") as pages:
        page = pages.open("ivy")
        page.goto(link)
        notice_text(page, "to answer the invitation")
        click_sso(page, sso.issuer)
        sign_in_at_provider(page, sso.issuer, "ivy")
        wait_until_loaded(page)
        page.wait_for_selector("#invitation-card:not([hidden])")
        assert "Saltmarsh Lab" in page.inner_text("#invitation-text")
        page.click("#invitation-accept")
        notice_text(page, "You joined Saltmarsh Lab as member")
        assert app_state(page, "orgs") == [{"id": org.json()["id"], "role": "member"}]
        token = access_token_from_page(page, stack.auth)
        with httpx.Client(base_url=stack.rag_service.url, timeout=30) as api:
            me = api.get("/me", headers={"Authorization": f"Bearer {token}"})
        assert me.status_code == 200, me.text
        assert me.json()["orgs"] == [{"id": org.json()["id"], "role": "member"}]


def test_an_unverified_address_never_links_to_an_existing_account(browser, sso: SsoStack) -> None:
    stack = sso.browser
    victim = PEOPLE["mallory"][0]
    victim_id = password_account(stack.auth, victim, confirmed=True)
    unconfirmed = PEOPLE["uma"][0]
    password_account(stack.auth, unconfirmed, confirmed=False)
    owner = PEOPLE["victor"][0]
    owner_id = password_account(stack.auth, owner, confirmed=True)

    with browser_pages(browser, stack.app_url, "sso-linking") as pages:
        # The provider has not verified the address: the existing account stays out of reach.
        page = pages.open("mallory")
        click_sso(page, sso.issuer)
        sign_in_at_provider(page, sso.issuer, "mallory")
        assert "already exists" in error_text(page, "already exists")
        page.wait_for_selector("#auth-view:not([hidden])")
        assert "error=" not in page.url, "the app takes the refusal out of the address bar"
        assert page.evaluate("async (u) => (await fetch(u + '/api/auth/get-session', {credentials: 'include'})).json()", stack.auth) is None
        assert linked_providers(stack.auth, victim) == ["credential"]

        # Verified at the provider, but the account's own address was never confirmed: whoever
        # registered it may not be its owner, so no link either.
        page = pages.open("uma")
        click_sso(page, sso.issuer)
        sign_in_at_provider(page, sso.issuer, "uma")
        assert "already exists" in error_text(page, "already exists")
        assert linked_providers(stack.auth, unconfirmed) == ["credential"]

        # Verified on both sides: the SSO identity joins the account.
        page = pages.open("victor")
        click_sso(page, sso.issuer)
        sign_in_at_provider(page, sso.issuer, "victor")
        wait_until_loaded(page)
        token = access_token_from_page(page, stack.auth)
        assert jwt.decode(token, options={"verify_signature": False})["sub"] == owner_id
        assert linked_providers(stack.auth, owner) == ["credential", PROVIDER_ID]
    assert victim_id != owner_id


# ---- the protocol refusals, with an HTTP client acting as the browser --------------------------
class HttpBrowser:
    """Cookies per site and no automatic redirects, like a browser seen one hop at a time."""

    def __init__(self, sso: SsoStack) -> None:
        self.sso = sso
        self.http = httpx.Client(timeout=30, follow_redirects=False)
        self.app = sso.browser.app_url

    def start(self) -> str:
        """The app's button: the auth-service answers the provider's authorization URL."""
        response = self.http.post(f"{self.sso.auth}/api/auth/sign-in/social", headers={"Origin": self.sso.browser.web},
                                  json={"provider": PROVIDER_ID, "callbackURL": self.app, "errorCallbackURL": self.app,
                                        "disableRedirect": True})
        assert response.status_code == 200, response.text
        return response.json()["url"]

    def authorize(self, login: str) -> str:
        """Starts a sign-in and walks the provider's login and consent forms; returns the
        callback URL the provider redirects to, not yet followed."""
        response = self.http.get(self.start())
        callback = f"{self.sso.auth}/api/auth/callback/{PROVIDER_ID}?"
        for _ in range(12):  # redirects, the login form, the consent form: a handful of steps
            if response.is_redirect:
                target = urljoin(str(response.url), response.headers["location"])
                if target.startswith(callback):
                    return target
                response = self.http.get(target)
                continue
            assert response.status_code == 200, response.text
            form = re.search(r'<form[^>]*action="([^"]+)"', response.text)
            prompt = re.search(r'name="prompt" value="(\w+)"', response.text)
            assert form and prompt, response.text
            fields = {"prompt": prompt.group(1)}
            if prompt.group(1) == "login":
                fields |= {"login": login, "password": "whatever the provider accepts"}
            response = self.http.post(urljoin(str(response.url), form.group(1)), data=fields)
        raise AssertionError(f"the provider never redirected back: {response.status_code} {response.url}")

    def finish(self, callback: str) -> str:
        """Follows the provider's redirect to the auth-service; returns where it sends the browser."""
        response = self.http.get(callback)
        assert response.status_code == 302, response.text
        return response.headers["location"]

    def session(self) -> dict | None:
        return self.http.get(f"{self.sso.auth}/api/auth/get-session").json()

    def close(self) -> None:
        self.http.close()


def with_param(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()} | changes
    return urlunsplit(parts._replace(query=urlencode(query)))


def refusal(location: str) -> str:
    """The error code a refused callback redirects with (the app's ?error=, or Better Auth's error page)."""
    errors = parse_qs(urlsplit(location).query).get("error")
    assert errors, f"not a refusal: {location}"
    return errors[0]


@pytest.fixture
def client(sso: SsoStack) -> Iterator[HttpBrowser]:
    browser = HttpBrowser(sso)
    yield browser
    browser.close()


def test_the_client_flow_signs_in(client: HttpBrowser, sso: SsoStack) -> None:
    """The refusals below differ from this only by what they change."""
    location = client.finish(client.authorize("refusals"))
    assert location == client.app
    user = client.session()["user"]
    assert user["email"] == PEOPLE["refusals"][0]
    # The provider's access token is stored encrypted (hex of nonce + ciphertext + tag), never as
    # the provider issued it (oidc-provider's are 43 base64url characters).
    with psycopg.connect(sso.database_url) as db:
        rows = db.execute("""select "accountId", "accessToken" from account where "userId" = %s and "providerId" = %s""",
                          (user["id"], PROVIDER_ID)).fetchall()
    assert len(rows) == 1
    assert rows[0][0] == "refusals", "the account is keyed by the provider's subject"
    assert re.fullmatch(r"[0-9a-f]{100,}", rows[0][1]), rows[0][1]


def test_a_tampered_state_is_refused(client: HttpBrowser, sso: SsoStack) -> None:
    callback = client.authorize("refusals")
    state = parse_qs(urlsplit(callback).query)["state"][0]
    tampered = state[:-1] + ("A" if state[-1] != "A" else "B")
    assert refusal(client.finish(with_param(callback, state=tampered))) == "state_mismatch"
    assert client.session() is None


def test_a_state_from_another_browser_is_refused(client: HttpBrowser, sso: SsoStack) -> None:
    """Login CSRF: a callback started in the attacker's browser, opened in the victim's."""
    callback = client.authorize("refusals")
    victim = HttpBrowser(sso)
    try:
        assert refusal(victim.finish(callback)) == "state_mismatch"
        assert victim.session() is None
    finally:
        victim.close()


def test_a_wrong_issuer_is_refused(client: HttpBrowser, sso: SsoStack) -> None:
    callback = client.authorize("refusals")
    assert parse_qs(urlsplit(callback).query)["iss"] == [sso.issuer], "the provider names itself (RFC 9207)"
    assert refusal(client.finish(with_param(callback, iss="http://127.0.0.1:1"))) == "issuer_mismatch"
    assert client.session() is None


def test_a_replayed_authorization_code_is_refused(client: HttpBrowser, sso: SsoStack) -> None:
    first = client.authorize("refusals")
    assert client.finish(first) == client.app
    # The same callback again: its state is spent.
    assert refusal(client.finish(first)) == "state_mismatch"
    # The spent code under a fresh state from this browser: the provider refuses the code.
    signed_out = HttpBrowser(sso)
    try:
        fresh = signed_out.authorize("refusals")
        code = parse_qs(urlsplit(first).query)["code"][0]
        assert refusal(signed_out.finish(with_param(fresh, code=code))) == "invalid_code"
        assert signed_out.session() is None
    finally:
        signed_out.close()
