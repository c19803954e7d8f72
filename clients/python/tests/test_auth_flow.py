"""The token flow (`rag_client.auth.TokenAuth`) on real httpx clients: sign-in, API-key
exchange, refresh before `exp` and once on a 401, the session for the API-key routes, and
one refresh for many concurrent requests (ordered by events, not sleeps)."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

from rag_client import AsyncRagClient, AuthenticationError, RagClient, RagError, ServiceUnavailable
from services_support import (
    API_KEY,
    AUTH_URL,
    EMAIL,
    LIFETIME,
    PASSWORD,
    RAG_URL,
    Clock,
    Services,
    async_transport,
    sync_transport,
)

CONCURRENT = 16


@pytest.fixture
def key_client(services: Services, clock: Clock) -> Iterator[RagClient]:
    with RagClient(RAG_URL, AUTH_URL, api_key=API_KEY, clock=clock,
                   http=httpx.Client(transport=sync_transport(services))) as client:
        yield client


def test_an_api_key_is_exchanged_once_and_the_token_reused(key_client: RagClient, services: Services) -> None:
    key_client.list_documents()
    key_client.list_documents()
    assert services.token_calls == ["/auth/token"]
    assert services.authorizations("/documents") == ["Bearer a1", "Bearer a1"]


def test_the_token_is_refreshed_before_exp_not_earlier(key_client: RagClient, services: Services,
                                                       clock: Clock) -> None:
    key_client.list_documents()
    clock.now += LIFETIME - 60 - 0.001  # just before the refresh margin
    key_client.list_documents()
    clock.now += 0.001  # 60 s before `exp`: refreshed before the call is sent
    key_client.list_documents()
    assert services.authorizations("/documents") == ["Bearer a1", "Bearer a1", "Bearer a2"]
    assert services.token_calls == ["/auth/token", "/auth/token"]


def test_a_401_refreshes_once_and_sends_the_request_again(key_client: RagClient, services: Services) -> None:
    key_client.list_documents()
    services.revoke_all()
    assert key_client.list_documents().total == 0
    assert services.authorizations("/documents") == ["Bearer a1", "Bearer a1", "Bearer a2"]


def test_a_second_401_is_raised_not_retried_forever(key_client: RagClient, services: Services) -> None:
    key_client.list_documents()
    services.accept_tokens = False  # the fresh token is refused too
    with pytest.raises(AuthenticationError) as refused:
        key_client.list_documents()
    assert refused.value.code == "invalid_token"
    assert services.token_calls == ["/auth/token", "/auth/token"]


def test_a_multipart_upload_is_sent_again_whole_after_a_401(services: Services, clock: Clock) -> None:
    bodies: list[bytes] = []

    def record(request: httpx.Request) -> None:
        if request.url.path == "/documents/upload":
            bodies.append(request.content)

    with RagClient(RAG_URL, AUTH_URL, api_key=API_KEY, clock=clock,
                   http=httpx.Client(transport=sync_transport(services, record))) as client:
        client.list_documents()
        services.revoke_all()
        [uploaded] = client.upload([("tar.md", b"tar archives files.")])
    assert uploaded.document_id == "d1"
    assert len(bodies) == 2 and bodies[0] == bodies[1] and b"tar archives files." in bodies[1]


def test_a_refused_api_key_raises_its_code_and_leaves_the_lock_free(key_client: RagClient,
                                                                     services: Services) -> None:
    services.api_key_valid = False
    with pytest.raises(AuthenticationError) as refused:
        key_client.list_documents()
    assert refused.value.code == "invalid_api_key"
    services.api_key_valid = True
    finished = threading.Event()
    worker = threading.Thread(target=lambda: (key_client.list_documents(), finished.set()), daemon=True)
    worker.start()
    assert finished.wait(timeout=30), "the next call waits forever: the failed refresh kept the lock"


def test_a_fixed_access_token_is_never_refreshed(services: Services) -> None:
    with RagClient(RAG_URL, access_token="given", http=httpx.Client(transport=sync_transport(services))) as client:
        with pytest.raises(AuthenticationError) as refused:
            client.list_documents()
    assert refused.value.code == "invalid_token"
    assert services.token_calls == [] and services.authorizations("/documents") == ["Bearer given"]


def test_an_unreachable_auth_service_is_named(services: Services) -> None:
    def refuse(request: httpx.Request) -> None:
        if request.url.host == "auth.test":
            raise httpx.ConnectError("connection refused", request=request)

    with RagClient(RAG_URL, AUTH_URL, api_key=API_KEY,
                   http=httpx.Client(transport=sync_transport(services, refuse))) as client:
        with pytest.raises(ServiceUnavailable) as down:
            client.list_documents()
    assert down.value.code == "connection_error" and "auth service" in down.value.message
    assert services.authorizations("/documents") == []


# --- email/password: the session ---------------------------------------------------------

@pytest.fixture
def password_client(services: Services, clock: Clock) -> Iterator[RagClient]:
    with RagClient(RAG_URL, AUTH_URL, email=EMAIL, password=PASSWORD, clock=clock,
                   http=httpx.Client(transport=sync_transport(services))) as client:
        yield client


def test_a_password_client_signs_in_once_then_mints_from_its_session(password_client: RagClient,
                                                                       services: Services, clock: Clock) -> None:
    password_client.list_documents()
    clock.now += LIFETIME
    password_client.list_documents()
    assert services.token_calls == ["/auth/login", "/auth/token"]
    assert services.authorizations("/auth/token") == ["Bearer s1"]
    assert services.authorizations("/documents") == ["Bearer a1", "Bearer a2"]


def test_a_password_client_signs_in_again_when_its_session_ended(password_client: RagClient,
                                                                  services: Services, clock: Clock) -> None:
    password_client.list_documents()
    services.end_sessions()
    clock.now += LIFETIME
    assert password_client.list_documents().total == 0
    assert services.token_calls == ["/auth/login", "/auth/token", "/auth/login"]
    assert password_client.tokens.session_token == "s2"


def test_api_key_routes_carry_the_session_never_the_access_token(password_client: RagClient,
                                                                 services: Services) -> None:
    assert password_client.list_api_keys() == []
    assert services.authorizations("/auth/api-keys") == ["Bearer s1"]
    services.end_sessions()  # the session ended: a 401, then one sign-in and the call again
    assert password_client.list_api_keys() == []
    assert services.authorizations("/auth/api-keys") == ["Bearer s1", "Bearer s1", "Bearer s2"]
    assert services.token_calls == ["/auth/login", "/auth/login"]


def test_an_api_key_client_cannot_manage_keys_and_sends_nothing(key_client: RagClient,
                                                                services: Services) -> None:
    with pytest.raises(RagError) as refused:
        key_client.list_api_keys()
    assert refused.value.code == "session_required"
    assert services.seen == []


# --- concurrency: one refresh for many requests ------------------------------------------

class ClockWatch(Clock):
    """A clock that counts its reads once armed: the token route holds its answer until every
    request has read the clock (found its token expired) and so is past its own check."""

    def __init__(self, reads_wanted: int, reached: threading.Event | asyncio.Event) -> None:
        super().__init__()
        self.reads_wanted = reads_wanted
        self.reached = reached
        self.reads: int | None = None
        self._counting = threading.Lock()  # threads read it at once

    def arm(self) -> None:
        self.reads = 0

    def __call__(self) -> float:
        with self._counting:
            if self.reads is not None:
                self.reads += 1
                if self.reads >= self.reads_wanted:
                    self.reached.set()
        return self.now


def test_threads_with_an_expired_token_share_one_refresh(services: Services) -> None:
    every_request_checked = threading.Event()
    # Each request reads the clock once before the lock; the one refreshing reads it again inside.
    clock = ClockWatch(CONCURRENT + 1, every_request_checked)

    def hold_the_refresh(request: httpx.Request) -> None:
        if request.url.path == "/auth/token" and clock.reads is not None:
            assert every_request_checked.wait(timeout=30), "the other requests never checked the token"

    with RagClient(RAG_URL, AUTH_URL, api_key=API_KEY, clock=clock,
                   http=httpx.Client(transport=sync_transport(services, hold_the_refresh))) as client:
        client.list_documents()
        clock.now += LIFETIME  # expired
        clock.arm()
        failures: list[BaseException] = []

        def call() -> None:
            try:
                client.list_documents()
            except BaseException as exc:  # reported below, with the count
                failures.append(exc)

        threads = [threading.Thread(target=call) for _ in range(CONCURRENT)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    assert failures == []
    assert services.token_calls == ["/auth/token", "/auth/token"], "exactly one refresh for all of them"
    assert services.authorizations("/documents")[1:] == ["Bearer a2"] * CONCURRENT


@pytest.mark.asyncio
async def test_concurrent_tasks_with_an_expired_token_share_one_refresh(services: Services) -> None:
    every_request_checked = asyncio.Event()
    clock = ClockWatch(CONCURRENT + 1, every_request_checked)

    async def hold_the_refresh(request: httpx.Request) -> None:
        if request.url.path == "/auth/token" and clock.reads is not None:
            await every_request_checked.wait()

    async with AsyncRagClient(RAG_URL, AUTH_URL, api_key=API_KEY, clock=clock,
                              http=httpx.AsyncClient(transport=async_transport(services, hold_the_refresh))) as client:
        await client.list_documents()
        clock.now += LIFETIME
        clock.arm()
        pages = await asyncio.wait_for(asyncio.gather(*(client.list_documents() for _ in range(CONCURRENT))), 60)
    assert [page.total for page in pages] == [0] * CONCURRENT
    assert services.token_calls == ["/auth/token", "/auth/token"], "exactly one refresh for all of them"
    assert services.authorizations("/documents")[1:] == ["Bearer a2"] * CONCURRENT


@pytest.mark.asyncio
async def test_concurrent_401s_for_the_same_token_share_one_refresh(services: Services, clock: Clock) -> None:
    every_request_refused = asyncio.Event()
    refused: list[str] = []

    async def refuse_together(request: httpx.Request) -> None:
        # The rotated token's requests are answered (401) only once all of them have arrived.
        if request.url.path == "/documents" and request.headers["authorization"] == "Bearer a1" \
                and "a1" not in services.valid:
            refused.append("a1")
            if len(refused) == CONCURRENT:
                every_request_refused.set()
            await every_request_refused.wait()

    async with AsyncRagClient(RAG_URL, AUTH_URL, api_key=API_KEY, clock=clock,
                              http=httpx.AsyncClient(transport=async_transport(services, refuse_together))) as client:
        await client.list_documents()
        services.revoke_all()
        await asyncio.wait_for(asyncio.gather(*(client.list_documents() for _ in range(CONCURRENT))), 60)
    assert len(refused) == CONCURRENT
    assert services.token_calls == ["/auth/token", "/auth/token"], "one refresh, not one per refused request"
    # The first call, every request refused with a1, every one sent again with a2.
    assert Counter(services.authorizations("/documents")) == {"Bearer a1": 1 + CONCURRENT, "Bearer a2": CONCURRENT}


def test_threads_refused_with_the_same_token_share_one_refresh(services: Services, clock: Clock) -> None:
    all_refused = threading.Barrier(CONCURRENT, timeout=30)

    def refuse_together(request: httpx.Request) -> None:
        if request.url.path == "/documents" and request.headers["authorization"] == "Bearer a1" \
                and "a1" not in services.valid:
            all_refused.wait()

    with RagClient(RAG_URL, AUTH_URL, api_key=API_KEY, clock=clock,
                   http=httpx.Client(transport=sync_transport(services, refuse_together))) as client:
        client.list_documents()
        services.revoke_all()
        threads = [threading.Thread(target=client.list_documents) for _ in range(CONCURRENT)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    assert services.token_calls == ["/auth/token", "/auth/token"], "one refresh, not one per refused request"
    # The first call, every request refused with a1, every one sent again with a2.
    assert Counter(services.authorizations("/documents")) == {"Bearer a1": 1 + CONCURRENT, "Bearer a2": CONCURRENT}


@pytest.mark.asyncio
async def test_the_async_client_streams_after_a_refresh(services: Services, clock: Clock) -> None:
    async with AsyncRagClient(RAG_URL, AUTH_URL, api_key=API_KEY, clock=clock,
                              http=httpx.AsyncClient(transport=async_transport(services))) as client:
        await client.list_documents()
        services.revoke_all()
        events = [event async for event in client.chat_stream("What does tar do?")]
    assert [event.text for event in events] == ["Tar archives."]  # type: ignore[union-attr]
    assert services.authorizations("/chat") == ["Bearer a1", "Bearer a2"]


# --- two-factor codes ---------------------------------------------------------------------

TOTP = "123456"


class Codes:
    """The authenticator app: gives the codes it is given, in order, and counts the asks."""

    def __init__(self, *codes: str) -> None:
        self.codes = list(codes)
        self.asked = 0

    def __call__(self) -> str:
        self.asked += 1
        return self.codes.pop(0)


def two_factor_client(services: Services, clock: Clock, codes: Codes | None) -> RagClient:
    services.two_factor_code = TOTP
    return RagClient(RAG_URL, AUTH_URL, email=EMAIL, password=PASSWORD, two_factor_code=codes, clock=clock,
                     http=httpx.Client(transport=sync_transport(services)))


def test_an_account_with_two_factor_codes_signs_in_with_the_code(services: Services, clock: Clock) -> None:
    codes = Codes(TOTP)
    with two_factor_client(services, clock, codes) as client:
        assert client.list_documents().total == 0
        clock.now += LIFETIME  # minted from the session: no second code
        client.list_documents()
    assert services.token_calls == ["/auth/login", "/auth/login/two-factor", "/auth/token"]
    assert services.two_factor_bodies == [{"two_factor_token": "c1", "code": TOTP}]
    assert codes.asked == 1
    assert services.authorizations("/documents") == ["Bearer a1", "Bearer a2"]


def test_a_sign_in_again_after_the_session_ended_asks_for_a_new_code(services: Services, clock: Clock) -> None:
    with two_factor_client(services, clock, Codes(TOTP, TOTP)) as client:
        client.list_documents()
        services.end_sessions()
        clock.now += LIFETIME
        assert client.list_documents().total == 0
        assert client.tokens.session_token == "s2"
    assert services.token_calls == ["/auth/login", "/auth/login/two-factor", "/auth/token", "/auth/login",
                                    "/auth/login/two-factor"]
    assert [body["two_factor_token"] for body in services.two_factor_bodies] == ["c1", "c2"]


def test_a_backup_code_is_sent_as_one(services: Services, clock: Clock) -> None:
    services.backup_codes = {"Ab3x-9kQz"}
    with two_factor_client(services, clock, Codes(" Ab3x-9kQz ")) as client:
        client.list_documents()
    assert services.two_factor_bodies == [{"two_factor_token": "c1", "backup_code": "Ab3x-9kQz"}]


def test_without_a_code_the_sign_in_stops_with_two_factor_required(services: Services, clock: Clock) -> None:
    with two_factor_client(services, clock, None) as client:
        with pytest.raises(AuthenticationError) as refused:
            client.list_documents()
    assert refused.value.code == "two_factor_required"
    assert "two_factor_code" in refused.value.message
    assert services.token_calls == ["/auth/login"]
    assert services.authorizations("/documents") == []


def test_a_wrong_code_is_refused_and_the_next_call_signs_in_again(services: Services, clock: Clock) -> None:
    codes = Codes("000000", TOTP)
    with two_factor_client(services, clock, codes) as client:
        with pytest.raises(AuthenticationError) as refused:
            client.list_documents()
        assert refused.value.code == "invalid_code"
        assert client.list_documents().total == 0  # the lock was released; a new challenge
    assert [(body["two_factor_token"], body["code"]) for body in services.two_factor_bodies] == [
        ("c1", "000000"), ("c2", TOTP)]
    assert services.authorizations("/documents") == ["Bearer a1"]


def test_a_two_factor_code_needs_an_email_sign_in() -> None:
    with pytest.raises(ValueError, match="email/password"):
        RagClient(RAG_URL, AUTH_URL, api_key=API_KEY, two_factor_code=Codes(TOTP))


@pytest.mark.asyncio
async def test_concurrent_async_calls_of_a_two_factor_account_send_one_code(services: Services,
                                                                             clock: Clock) -> None:
    services.two_factor_code = TOTP
    codes = Codes(TOTP)
    async with AsyncRagClient(RAG_URL, AUTH_URL, email=EMAIL, password=PASSWORD, two_factor_code=codes,
                              clock=clock, http=httpx.AsyncClient(transport=async_transport(services))) as client:
        pages = await asyncio.gather(*(client.list_documents() for _ in range(CONCURRENT)))
    assert [page.total for page in pages] == [0] * CONCURRENT
    assert codes.asked == 1
    assert services.token_calls == ["/auth/login", "/auth/login/two-factor"]


# --- the token outside a request (folder sync's state file, the e2e tests) ----------------

def test_access_token_is_reused_until_forced(key_client: RagClient, services: Services) -> None:
    assert key_client.access_token() == "a1"
    assert key_client.access_token() == "a1"
    assert key_client.access_token(force=True) == "a2"
    assert services.token_calls == ["/auth/token", "/auth/token"]


@pytest.mark.asyncio
async def test_the_async_access_token_is_reused_until_forced_and_a_refusal_frees_the_lock(
        services: Services, clock: Clock) -> None:
    async with AsyncRagClient(RAG_URL, AUTH_URL, api_key=API_KEY, clock=clock,
                              http=httpx.AsyncClient(transport=async_transport(services))) as client:
        assert await client.access_token() == "a1"
        assert await client.access_token() == "a1"
        services.api_key_valid = False
        with pytest.raises(AuthenticationError):
            await client.access_token(force=True)
        services.api_key_valid = True
        assert await asyncio.wait_for(client.access_token(), 30) == "a2"
    assert services.token_calls == ["/auth/token"] * 3


@pytest.mark.parametrize("client_class", [RagClient, AsyncRagClient])
def test_both_clients_read_their_credentials_from_the_environment(client_class: type,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAG_URL", RAG_URL + "/")
    monkeypatch.setenv("AUTH_URL", AUTH_URL)
    monkeypatch.setenv("RAG_API_KEY", API_KEY)
    client = client_class.from_env()
    assert (client.rag_url, client.tokens.auth_url, client.tokens.api_key) == (RAG_URL, AUTH_URL, API_KEY)
    monkeypatch.delenv("RAG_API_KEY")
    monkeypatch.setenv("RAG_EMAIL", EMAIL)
    monkeypatch.setenv("RAG_PASSWORD", PASSWORD)
    client = client_class.from_env(rag_url="http://other.test")
    assert (client.rag_url, client.tokens.email, client.tokens.api_key) == ("http://other.test", EMAIL, None)
