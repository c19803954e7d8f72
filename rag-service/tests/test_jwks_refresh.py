"""JWKS stale-while-revalidate against a real HTTP issuer whose JWKS endpoint can be held.

A held endpoint stands for a slow or hung auth-service: requests whose `kid` is cached must
not wait for it, only one fetch may be in flight, and a rotation still reaches the verifier.
No timing assertions: the tests look at what the issuer received while it was held.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest_asyncio

from fixtures_apps import settings_for
from fixtures_issuer import JwksIssuer
from rag_service.auth.tokens import AccessTokenVerifier

GUARD_S = 30  # only bounds a hang; never reached when the code is right


class HeldJwks:
    """Makes the issuer's JWKS responses wait until `release()` while `hold()` is on."""

    def __init__(self, issuer: JwksIssuer) -> None:
        self._open = threading.Event()
        self._open.set()
        self._real = issuer.jwks
        issuer.jwks = self._serve  # type: ignore[method-assign]

    def _serve(self) -> dict[str, Any]:
        self._open.wait(GUARD_S)
        return self._real()

    def hold(self) -> None:
        self._open.clear()

    def release(self) -> None:
        self._open.set()


async def until(condition: Any) -> None:
    """Let the loop and the issuer's threads run until `condition()` holds (hang guard only)."""
    async with asyncio.timeout(GUARD_S):
        while not condition():
            await asyncio.sleep(0.01)


@pytest_asyncio.fixture
async def verifier_on(tmp_path: Path):
    made: list[AccessTokenVerifier] = []
    holds: list[HeldJwks] = []

    def make(issuer: JwksIssuer, **overrides: Any) -> tuple[AccessTokenVerifier, HeldJwks]:
        overrides.setdefault("jwks_timeout_seconds", GUARD_S * 2)
        verifier = AccessTokenVerifier(settings_for(issuer, tmp_path, **overrides))
        held = HeldJwks(issuer)
        made.append(verifier)
        holds.append(held)
        return verifier, held

    yield make
    for held in holds:
        held.release()
    for verifier in made:
        await verifier.aclose()


async def test_cached_kid_never_waits_for_a_slow_jwks(verifier_on, isolated_issuer):
    # Cache lifetime 0: every request finds the cache old and wants it refreshed.
    verifier, held = verifier_on(isolated_issuer, jwks_cache_seconds=0, jwks_refetch_min_interval=0)
    await verifier.verify(isolated_issuer.mint("u1"))
    assert isolated_issuer.jwks_requests == 1
    held.hold()

    burst = [asyncio.create_task(verifier.verify(isolated_issuer.mint(f"u{i}"))) for i in range(20)]
    # The background refresh reached the issuer and is stuck there...
    await until(lambda: isolated_issuer.jwks_requests == 2)
    # ...while every request with a cached kid is answered (the refresh stays held meanwhile:
    # a request that waited for it would hang here until the guard fails the test).
    async with asyncio.timeout(GUARD_S / 2):
        answered = await asyncio.gather(*burst)
    assert [claims["sub"] for claims in answered] == [f"u{i}" for i in range(20)]
    # More cached-kid requests while the refresh hangs: still answered, no second fetch.
    for i in range(20):
        assert (await verifier.verify(isolated_issuer.mint(f"v{i}")))["sub"] == f"v{i}"
    assert isolated_issuer.jwks_requests == 2


async def test_unknown_kid_joins_the_fetch_in_flight_and_sees_the_rotation(verifier_on, isolated_issuer):
    verifier, held = verifier_on(isolated_issuer, jwks_cache_seconds=0, jwks_refetch_min_interval=0)
    old_token = isolated_issuer.mint("u1")
    await verifier.verify(old_token)
    held.hold()
    await verifier.verify(old_token)  # starts the background refresh, which hangs
    await until(lambda: isolated_issuer.jwks_requests == 2)

    new_key = isolated_issuer.rotate()
    waiting = [asyncio.create_task(verifier.verify(isolated_issuer.mint(f"n{i}", key=new_key))) for i in range(10)]
    await asyncio.sleep(0.05)
    assert not any(task.done() for task in waiting), "an unknown kid must wait for the keys"
    held.release()
    assert [(await task)["sub"] for task in waiting] == [f"n{i}" for i in range(10)]
    # They all rode on the refresh that was in flight.
    assert isolated_issuer.jwks_requests == 2
    assert (await verifier.verify(old_token))["sub"] == "u1"  # the old key is still published


async def test_a_failed_background_refresh_keeps_the_old_keys(verifier_on, isolated_issuer):
    verifier, _ = verifier_on(isolated_issuer, jwks_cache_seconds=0, jwks_refetch_min_interval=0)
    await verifier.verify(isolated_issuer.mint("u1"))
    real = isolated_issuer.jwks
    isolated_issuer.jwks = lambda: {"not": "a jwks"}  # type: ignore[method-assign]
    answered = 0
    async with asyncio.timeout(GUARD_S):
        # Requests keep coming while refresh after refresh fails (each starts once the
        # previous one is over); every one is answered from the cached keys.
        while isolated_issuer.jwks_requests < 4:
            assert (await verifier.verify(isolated_issuer.mint(f"r{answered}")))["sub"] == f"r{answered}"
            answered += 1
            await asyncio.sleep(0.01)
    isolated_issuer.jwks = real  # type: ignore[method-assign]
    assert (await verifier.verify(isolated_issuer.mint("u2")))["sub"] == "u2"


async def test_fresh_cache_starts_no_fetch(verifier_on, isolated_issuer):
    verifier, _ = verifier_on(isolated_issuer, jwks_cache_seconds=300)
    for i in range(30):
        await verifier.verify(isolated_issuer.mint(f"u{i}"))
    await asyncio.sleep(0.05)
    assert isolated_issuer.jwks_requests == 1
