"""The client's credentials as one `httpx.Auth` flow, for `httpx.Client` and `httpx.AsyncClient`.

Each request gets the access JWT (or, for the auth-service's API-key routes, the sign-in's
session token). A token that is missing or close to `exp` is fetched first (API-key exchange,
mint from the session, or sign-in: `tokens.TokenState` says which); a 401 fetches another one
and sends the request once more. Concurrent requests that find the token stale wait on one
lock, and only the first refreshes: the others see the new token when the lock is theirs.

The flow is written once (`_flow`), as a generator of steps: a request to send, a token
request whose answer it reads, or taking / releasing the lock. `sync_auth_flow` and
`async_auth_flow` run those steps with a thread lock or an asyncio lock.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Generator
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from rag_client.errors import AuthenticationError
from rag_client.tokens import TokenState

# Token calls in one refresh: mint from the session, sign in again, send the two-factor code.
MAX_TOKEN_CALLS = 3


@dataclass(frozen=True)
class _TokenCall:
    """A request to the auth-service whose answer the flow reads before it goes on."""

    request: httpx.Request


_Lock = Literal["lock", "unlock"]
_Step = httpx.Request | _TokenCall | _Lock
# Sent back into the flow: the answer to a request or token call, None after a lock step.
_Flow = Generator[_Step, httpx.Response | None, Any]


class TokenAuth(httpx.Auth):
    """Bearer credentials from `tokens`: the access JWT (rag-service), or with `session=True`
    the sign-in's session token (the auth-service's API-key routes). `session_auth()` gives
    the session twin, sharing the tokens and the lock."""

    def __init__(self, tokens: TokenState, *, session: bool = False) -> None:
        self.tokens = tokens
        self.session = session
        self._thread_lock = threading.Lock()
        self._async_lock = asyncio.Lock()

    def session_auth(self) -> TokenAuth:
        twin = TokenAuth(self.tokens, session=True)
        # One refresh at a time across both: a sign-in renews the session and the access token.
        twin._thread_lock, twin._async_lock = self._thread_lock, self._async_lock
        return twin

    # --- httpx entry points --------------------------------------------------------------

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.read()  # a 401 sends it again
        yield from self._run_sync(self._flow(request))

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        await request.aread()
        steps = self._run_async(self._flow(request))
        try:
            step = await anext(steps)
            while True:
                step = await steps.asend((yield step))
        except StopAsyncIteration:
            return
        finally:
            await steps.aclose()  # releases the lock if httpx stops the flow half-way

    def sync_token(self, http: httpx.Client, *, force: bool = False) -> str:
        """The current credential outside a request (refreshed first when stale, or forced)."""
        steps = self._run_sync(self._fresh(_timeout_of(http), force=force))
        try:
            request = next(steps)
            while True:
                request = steps.send(http.send(request, auth=None))
        except StopIteration:
            pass
        finally:
            steps.close()  # releases the lock when a token call fails
        return self._credential_value()

    async def async_token(self, http: httpx.AsyncClient, *, force: bool = False) -> str:
        steps = self._run_async(self._fresh(_timeout_of(http), force=force))
        try:
            request = await anext(steps)
            while True:
                request = await steps.asend(await http.send(request, auth=None))
        except StopAsyncIteration:
            pass
        finally:
            await steps.aclose()
        return self._credential_value()

    # --- the flow, written once ----------------------------------------------------------

    def _flow(self, request: httpx.Request) -> _Flow:
        timeout = request.extensions.get("timeout")
        header = yield from self._fresh(timeout)
        used = self._credential()
        request.headers["authorization"] = header
        response = yield request
        assert response is not None
        if response.status_code != 401 or not self.tokens.can_refresh:
            return
        yield "lock"
        # Refresh unless another request already replaced the token that was refused.
        if self._credential() == used or self._stale():
            self.tokens.invalidate(session=self.session)
            yield from self._refresh(timeout)
        yield "unlock"
        request.headers["authorization"] = self._header()
        yield request

    def _fresh(self, timeout: dict[str, Any] | None, *, force: bool = False) -> _Flow:
        """The Authorization header, after a refresh if the credential is stale (or `force`)."""
        if force or self._stale():
            yield "lock"
            if force:
                self.tokens.invalidate(session=self.session)
            if self._stale():  # a request that held the lock before may have refreshed it
                yield from self._refresh(timeout)
            yield "unlock"
        return self._header()

    def _refresh(self, timeout: dict[str, Any] | None) -> _Flow:
        step = self.tokens.next_request()
        for _ in range(MAX_TOKEN_CALLS):
            answer = yield _TokenCall(step.build(timeout))
            assert answer is not None
            if self.tokens.accept(step, answer):
                return
            step = self.tokens.next_request(relogin=True)
        raise AuthenticationError(401, "sign_in_failed", "the auth-service did not finish the sign-in")

    def _stale(self) -> bool:
        return self.tokens.needs_session if self.session else self.tokens.needs_refresh()

    def _credential(self) -> str | None:
        return self.tokens.session_token if self.session else self.tokens.access_token

    def _credential_value(self) -> str:
        value = self._credential()
        assert value is not None, "a refresh either sets the credential or raises"
        return value

    def _header(self) -> str:
        if self.session:
            return self.tokens.session_headers()["authorization"]  # refuses API-key and fixed-token clients
        return f"Bearer {self._credential_value()}"

    # --- running the steps ---------------------------------------------------------------

    def _run_sync(self, flow: _Flow) -> Generator[httpx.Request, httpx.Response, None]:
        held = False
        try:
            step = next(flow)
            while True:
                answer: httpx.Response | None = None
                if step == "lock":
                    self._thread_lock.acquire()
                    held = True
                elif step == "unlock":
                    self._thread_lock.release()
                    held = False
                elif isinstance(step, _TokenCall):
                    answer = yield step.request
                    answer.read()
                else:
                    answer = yield step
                step = flow.send(answer)
        except StopIteration:
            return
        finally:
            if held:
                self._thread_lock.release()
            flow.close()

    async def _run_async(self, flow: _Flow) -> AsyncGenerator[httpx.Request, httpx.Response]:
        held = False
        try:
            step = next(flow)
            while True:
                answer: httpx.Response | None = None
                if step == "lock":
                    await self._async_lock.acquire()
                    held = True
                elif step == "unlock":
                    self._async_lock.release()
                    held = False
                elif isinstance(step, _TokenCall):
                    answer = yield step.request
                    await answer.aread()
                else:
                    answer = yield step
                step = flow.send(answer)
        except StopIteration:
            return
        finally:
            if held:
                self._async_lock.release()
            flow.close()


def _timeout_of(http: httpx.Client | httpx.AsyncClient) -> dict[str, Any]:
    return http.timeout.as_dict()
