"""An expired token, signed by the real key, is rejected.

Two auth-service replicas share one PostgreSQL database (and so one signing key, as in the
scale-out setup): replica B issues 3-second tokens; the rag-service trusts replica A's JWKS.
"""

from __future__ import annotations

import time
import uuid

import httpx
import jwt
import pytest

from stack import free_port, start_auth, start_rag

SECRET = "e2e-" + "s" * 40


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory, make_postgres_database):
    from conftest import ARTIFACTS

    database_url = make_postgres_database()
    data = tmp_path_factory.mktemp("expiry")
    port_a = free_port()
    issuer = f"http://127.0.0.1:{port_a}"
    shared = {"DATABASE_URL": database_url, "BETTER_AUTH_SECRET": SECRET, "JWT_ISSUER": issuer}
    services = []
    try:
        a = start_auth(data / "a", ARTIFACTS, name="auth-a", port=port_a, **shared)
        services.append(a)
        b = start_auth(data / "b", ARTIFACTS, name="auth-b", JWT_EXPIRES_IN="3s", **shared)
        services.append(b)
        rag = start_rag(data / "rag", ARTIFACTS, a.url, name="rag-expiry", JWT_LEEWAY_SECONDS="0")
        services.append(rag)
        yield a, b, rag
    finally:
        for service in reversed(services):
            service.stop()


def test_expired_token_is_rejected_and_fresh_one_accepted(replicas) -> None:
    a, b, rag = replicas
    email = f"exp-{uuid.uuid4().hex[:8]}@example.com"
    signup = httpx.post(f"{a.url}/auth/signup",
                        json={"email": email, "password": "correct horse battery", "full_name": "Exp"})
    assert signup.status_code == 201, signup.text
    session = {"Authorization": f"Bearer {signup.json()['session_token']}"}

    short = httpx.post(f"{b.url}/auth/token", headers=session)
    assert short.status_code == 200, short.text
    token = short.json()["access_token"]
    me = lambda t: httpx.get(f"{rag.url}/me", headers={"Authorization": f"Bearer {t}"})
    assert me(token).status_code == 200  # same key and issuer: valid while fresh
    # The clock under test is the real one of another process: wait until the token's own `exp`
    # has passed (JWT_LEEWAY_SECONDS=0), not a guessed number of seconds.
    expires_at = jwt.decode(token, options={"verify_signature": False})["exp"]
    time.sleep(max(0.0, expires_at - time.time()) + 0.05)
    expired = me(token)
    assert expired.status_code == 401 and expired.json()["error"]["code"] == "token_expired", expired.text

    fresh = httpx.post(f"{a.url}/auth/token", headers=session).json()["access_token"]
    assert me(fresh).status_code == 200
