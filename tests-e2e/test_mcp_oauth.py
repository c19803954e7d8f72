"""The auth-service as the OAuth 2.1 authorization server of the MCP server, end to end on the
real stack: the official `mcp` client's OAuth support (OAuthClientProvider) starts from the 401
of /mcp, reads the protected-resource metadata it points at and the auth-service's RFC 8414
metadata, registers itself (RFC 7591), sends the person to the authorization endpoint - headless
Chromium signs in and consents on the auth-service's own pages - exchanges the code with its
PKCE verifier and calls the tools with the resource-bound JWT. Another user's documents never
appear; the refresh token gets a working access token; a token issued for another resource is
refused by the rag-service.

The client's redirect URI is a loopback callback, as a desktop client's; the browser's request to
it is intercepted (that is where the client's own listener would receive the code)."""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import httpx2
import jwt
import pyotp
import pytest
from mcp import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

from agents_support import mcp_session, ok, save
from browser_support import CHROMIUM, CHROMIUM_ARGS, require_chromium, save_failure_artifacts
from conftest import ARTIFACTS, sign_up
from stack import free_port, start_auth, start_rag

PASSWORD = "correct horse battery"
CLIENT_NAME = "e2e MCP client"
CALLBACK = f"http://127.0.0.1:{free_port()}/callback"
# A resource the auth-service also issues tokens for: some other API, not the rag-service.
OTHER_RESOURCE = "https://other-api.example"
TOOLS = {"search", "ask", "list_documents", "get_document", "save_document", "list_collections"}
BEAVERS = ("Beavers build dams of branches and mud across streams. The pond behind the dam keeps the "
           "entrance of their lodge under water, safe from wolves.")
OTTERS = ("Sea otters hold hands while they sleep so that they do not drift apart, and they keep a "
          "favourite stone in a pouch of skin to crack open shellfish.")


@dataclass
class OAuthStack:
    auth: str
    rag: str

    @property
    def mcp(self) -> str:
        return f"{self.rag}/mcp"


@pytest.fixture(scope="module")
def oauth_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OAuthStack]:
    """The auth-service issuing tokens for the rag-service (PUBLIC_URL and its /mcp) and for
    OTHER_RESOURCE; the rag-service knowing its PUBLIC_URL, so it accepts its own tokens only."""
    require_chromium()
    rag_port = free_port()
    rag_url = f"http://127.0.0.1:{rag_port}"
    data = tmp_path_factory.mktemp("mcp-oauth")
    auth = start_auth(data / "auth", ARTIFACTS, name="auth-oauth",
                      OAUTH_RESOURCES=f"{rag_url},{rag_url}/mcp,{OTHER_RESOURCE}")
    rag = None
    try:
        rag = start_rag(data / "rag", ARTIFACTS, auth.url, name="rag-oauth", port=rag_port, PUBLIC_URL=rag_url)
        yield OAuthStack(auth=auth.url, rag=rag.url)
    finally:
        if rag:
            rag.stop()
        auth.stop()


@dataclass
class MemoryTokenStorage:
    """The client's TokenStorage: what a desktop client would keep on disk."""

    tokens: OAuthToken | None = None
    client_info: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


@dataclass
class Person:
    """A person at their browser (one Chromium context: one cookie jar) who signs in and consents
    on the auth-service's pages."""

    context: Any
    email: str
    # An account with two-factor codes: the sign-in page asks for a code after the password.
    totp: pyotp.TOTP | None = None
    callbacks: list[str] = field(default_factory=list)
    consent_pages: list[str] = field(default_factory=list)

    async def open_authorization(self, url: str) -> Any:
        """A page at `url`, whose redirect to the client's callback is caught and recorded."""
        page = await self.context.new_page()
        page.set_default_timeout(30_000)

        async def catch(route: Any) -> None:
            self.callbacks.append(route.request.url)
            await route.fulfill(status=200, content_type="text/html", body="<p>Signed in. Close this window.</p>")

        await page.route(f"{CALLBACK}**", catch)
        await page.goto(url)
        return page

    async def sign_in_and_consent(self, url: str) -> None:
        """The client's redirect_handler: signed out, so the sign-in page first."""
        page = await self.open_authorization(url)
        await page.wait_for_url("**/oauth/sign-in?**")
        await page.fill("#email", self.email)
        await page.fill("#password", PASSWORD)
        await page.click("#sign-in button[type=submit]")
        if self.totp is not None:
            await page.wait_for_selector("#two-factor:not([hidden])")
            # The next period's code: the one that confirmed the set-up is spent.
            await page.fill("#code", self.totp.at(time.time() + 30))
            await page.click("#two-factor button[type=submit]")
        await self.allow(page)

    async def allow(self, page: Any) -> None:
        await page.wait_for_url("**/oauth/consent?**")
        self.consent_pages.append(await page.inner_text("body"))
        await page.click("#allow")
        await page.wait_for_url(f"{CALLBACK}**")
        await page.close()

    async def callback(self) -> AuthorizationCodeResult:
        """The client's callback_handler: the parameters of the redirect just caught."""
        query = parse_qs(urlsplit(self.callbacks[-1]).query)
        return AuthorizationCodeResult(code=query["code"][0], state=query["state"][0], iss=query["iss"][0])


@asynccontextmanager
async def browser_person(email: str, artifacts_prefix: str, totp: pyotp.TOTP | None = None) -> AsyncIterator[Person]:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = await browser.new_context()
        try:
            yield Person(context, email, totp)
        except BaseException:
            save_failure_artifacts({str(i): page for i, page in enumerate(context.pages)}, [], artifacts_prefix)
            raise
        finally:
            await browser.close()


def oauth_provider(stack: OAuthStack, storage: MemoryTokenStorage, person: Person) -> OAuthClientProvider:
    return OAuthClientProvider(
        server_url=stack.mcp,
        client_metadata=OAuthClientMetadata(client_name=CLIENT_NAME, redirect_uris=[CALLBACK],
                                            grant_types=["authorization_code", "refresh_token"],
                                            response_types=["code"], token_endpoint_auth_method="none"),
        storage=storage,
        redirect_handler=person.sign_in_and_consent,
        callback_handler=person.callback,
    )


def unverified_claims(token: str) -> dict[str, Any]:
    """The claims, to look at (the rag-service verifies them; the auth-service tests do too)."""
    return jwt.decode(token, options={"verify_signature": False})


async def sign_in_with_oauth(stack: OAuthStack, email: str, prefix: str,
                             totp: pyotp.TOTP | None = None) -> tuple[MemoryTokenStorage, Person, set[str]]:
    """The whole flow, started by the first MCP request without a token: the client's storage,
    the person who consented, and the tools the client listed."""
    storage = MemoryTokenStorage()
    async with browser_person(email, prefix, totp) as person:
        async with httpx2.AsyncClient(auth=oauth_provider(stack, storage, person), timeout=60) as http:
            async with Client(streamable_http_client(stack.mcp, http_client=http)) as client:
                tools = {tool.name for tool in (await client.list_tools()).tools}
    return storage, person, tools


@pytest.mark.asyncio
async def test_the_mcp_client_signs_in_with_oauth_and_sees_only_its_users_documents(oauth_stack: OAuthStack) -> None:
    owner_email = f"oauth-{secrets.token_hex(5)}@example.com"
    owner = sign_up(oauth_stack.auth, owner_email, PASSWORD)
    other = sign_up(oauth_stack.auth)
    others_document = save(oauth_stack.rag, other["access_token"], "Otters", OTTERS)
    storage = MemoryTokenStorage()
    async with browser_person(owner_email, "mcp-oauth") as person:
        async with httpx2.AsyncClient(auth=oauth_provider(oauth_stack, storage, person), timeout=60) as http:
            async with Client(streamable_http_client(oauth_stack.mcp, http_client=http)) as client:
                assert {tool.name for tool in (await client.list_tools()).tools} == TOOLS
                saved = ok(await client.call_tool("save_document", {"title": "Beavers", "content": BEAVERS}))
                document_id = saved["document_id"]
                found = ok(await client.call_tool("search", {"query": "why do beavers build dams", "top_k": 5}))
                assert [r["document_id"] for r in found["results"]] == [document_id]
                otters = ok(await client.call_tool("search", {"query": "sea otters sleep holding hands"}))
                assert {r["document_id"] for r in otters["results"]} <= {document_id}
                assert [d["id"] for d in ok(await client.call_tool("list_documents", {}))["documents"]] == [document_id]
                hidden = await client.call_tool("get_document", {"document_id": others_document})
                assert hidden.is_error and "not_found" in hidden.content[0].text
                answer = ok(await client.call_tool("ask", {"question": "Why do otters hold hands?"}))
                assert all(source["document_id"] != others_document for source in answer["sources"])

    # One sign-in, one consent page naming the client, one registered client.
    assert len(person.callbacks) == 1 and len(person.consent_pages) == 1
    assert CLIENT_NAME in person.consent_pages[0] and owner_email in person.consent_pages[0]
    assert storage.client_info is not None and storage.client_info.client_id
    tokens = storage.tokens
    assert tokens is not None and tokens.refresh_token
    claims = unverified_claims(tokens.access_token)
    assert claims["sub"] == owner["user"]["id"]
    assert claims["aud"] == oauth_stack.mcp
    assert claims["iss"] == oauth_stack.auth
    assert set(claims["scope"].split()) == {"read", "write", "offline_access"}
    assert claims["client_id"] == storage.client_info.client_id
    # The same token works on the REST API, as the same user.
    listed = httpx.get(f"{oauth_stack.rag}/documents", headers={"Authorization": f"Bearer {tokens.access_token}"},
                       timeout=30)
    assert listed.status_code == 200, listed.text
    assert [d["id"] for d in listed.json()["documents"]] == [document_id]


@pytest.mark.asyncio
async def test_the_refresh_token_gets_a_working_access_token_once(oauth_stack: OAuthStack) -> None:
    email = f"oauth-{secrets.token_hex(5)}@example.com"
    sign_up(oauth_stack.auth, email, PASSWORD)
    storage, _, tools = await sign_in_with_oauth(oauth_stack, email, "mcp-oauth-refresh")
    assert tools == TOOLS
    assert storage.tokens is not None and storage.client_info is not None
    form = {"grant_type": "refresh_token", "refresh_token": storage.tokens.refresh_token,
            "client_id": storage.client_info.client_id, "resource": oauth_stack.mcp}
    refreshed = httpx.post(f"{oauth_stack.auth}/api/auth/oauth2/token", data=form, timeout=30)
    assert refreshed.status_code == 200, refreshed.text
    access_token = refreshed.json()["access_token"]
    assert access_token != storage.tokens.access_token
    async with mcp_session(oauth_stack.rag, access_token) as client:
        assert ok(await client.call_tool("list_collections", {}))["collections"][0]["id"] == "personal"
    replayed = httpx.post(f"{oauth_stack.auth}/api/auth/oauth2/token", data=form, timeout=30)
    assert replayed.status_code == 400 and replayed.json()["error"] == "invalid_grant"


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


@pytest.mark.asyncio
async def test_a_token_for_another_resource_is_refused_by_the_rag_service(oauth_stack: OAuthStack) -> None:
    email = f"oauth-{secrets.token_hex(5)}@example.com"
    sign_up(oauth_stack.auth, email, PASSWORD)
    storage = MemoryTokenStorage()
    async with browser_person(email, "mcp-oauth-audience") as person:
        async with httpx2.AsyncClient(auth=oauth_provider(oauth_stack, storage, person), timeout=60) as http:
            async with Client(streamable_http_client(oauth_stack.mcp, http_client=http)) as client:
                await client.list_tools()
        # The same person and registered client, now asking for a token for OTHER_RESOURCE
        # (signed in already: straight to the consent page).
        assert storage.client_info is not None
        verifier, challenge = pkce_pair()
        query = {"response_type": "code", "client_id": storage.client_info.client_id, "redirect_uri": CALLBACK,
                 "scope": "read write", "state": "other", "code_challenge": challenge,
                 "code_challenge_method": "S256", "resource": OTHER_RESOURCE, "prompt": "consent"}
        page = await person.open_authorization(f"{oauth_stack.auth}/api/auth/oauth2/authorize?{urlencode(query)}")
        await person.allow(page)
    code = (await person.callback()).code
    exchanged = httpx.post(f"{oauth_stack.auth}/api/auth/oauth2/token", timeout=30, data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": CALLBACK,
        "client_id": storage.client_info.client_id, "code_verifier": verifier, "resource": OTHER_RESOURCE})
    assert exchanged.status_code == 200, exchanged.text
    foreign = exchanged.json()["access_token"]
    assert unverified_claims(foreign)["aud"] == OTHER_RESOURCE  # signed by the same keys, for another API

    refused = httpx.post(oauth_stack.mcp, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, timeout=30,
                         headers={"Authorization": f"Bearer {foreign}", "Accept": "application/json, text/event-stream"})
    assert refused.status_code == 401
    assert 'error="invalid_token"' in refused.headers["www-authenticate"]
    assert "audience" in refused.json()["error_description"].lower()
    rest = httpx.get(f"{oauth_stack.rag}/documents", headers={"Authorization": f"Bearer {foreign}"}, timeout=30)
    assert rest.status_code == 401
    # The rag-service's own token of the same person still works.
    assert storage.tokens is not None
    async with mcp_session(oauth_stack.rag, storage.tokens.access_token) as client:
        assert {tool.name for tool in (await client.list_tools()).tools} == TOOLS


@pytest.mark.asyncio
async def test_an_account_with_two_factor_codes_gives_its_code_on_the_sign_in_page(oauth_stack: OAuthStack) -> None:
    email = f"oauth-2fa-{secrets.token_hex(5)}@example.com"
    account = sign_up(oauth_stack.auth, email, PASSWORD)
    session = {"Authorization": f"Bearer {account['session_token']}"}
    enabled = httpx.post(f"{oauth_stack.auth}/api/auth/two-factor/enable", json={"password": PASSWORD},
                         headers=session, timeout=30)
    assert enabled.status_code == 200, enabled.text
    totp = pyotp.parse_uri(enabled.json()["totpURI"])
    assert isinstance(totp, pyotp.TOTP)
    current = {"Authorization": f"Bearer {enabled.headers.get('set-auth-token') or account['session_token']}"}
    confirmed = httpx.post(f"{oauth_stack.auth}/api/auth/two-factor/verify-totp", json={"code": totp.now()},
                           headers=current, timeout=30)
    assert confirmed.status_code == 200, confirmed.text

    storage, person, tools = await sign_in_with_oauth(oauth_stack, email, "mcp-oauth-2fa", totp)
    assert tools == TOOLS
    assert len(person.consent_pages) == 1 and len(person.callbacks) == 1
    assert storage.tokens is not None
    assert unverified_claims(storage.tokens.access_token)["sub"] == account["user"]["id"]
