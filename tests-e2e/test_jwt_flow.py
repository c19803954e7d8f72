"""The JWT flow across the two real services: the auth-service issues, the rag-service verifies."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jsonschema import Draft202012Validator

from conftest import sign_up

SCHEMA = Path(__file__).resolve().parent.parent / "shared-schemas" / "jwt-claims.schema.json"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _me(rag_url: str, token: str) -> httpx.Response:
    return httpx.get(f"{rag_url}/me", headers={"Authorization": f"Bearer {token}"}, timeout=10)


def _assert_rejected(response: httpx.Response, status: int = 401) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"]["code"]
    assert body["error"]["message"]


def test_both_services_are_healthy(auth_url: str, rag_url: str) -> None:
    assert httpx.get(f"{auth_url}/health").json()["status"] == "ok"
    rag_health = httpx.get(f"{rag_url}/health").json()
    assert rag_health["status"] == "ok"
    assert rag_health["services"]["database"] is True and rag_health["services"]["qdrant"] is True


def test_the_rag_service_embeds_with_the_default_onnx_encoder(stack: dict) -> None:
    # Default settings: the log names the encoder that loaded (and on a fresh model cache,
    # the ONNX export and how long it took, before it).
    assert "local embedder all-MiniLM-L6-v2 on onnx ready in" in stack["rag"].log()


def test_issued_token_is_accepted_and_matches_the_schema(auth_url: str, rag_url: str, user: dict) -> None:
    token = user["access_token"]
    claims = jwt.decode(token, options={"verify_signature": False})
    errors = list(Draft202012Validator(json.loads(SCHEMA.read_text())).iter_errors(claims))
    assert not errors, errors
    assert claims["aud"] == "rag-service" and claims["iss"] == auth_url
    assert claims["exp"] - claims["iat"] == 15 * 60

    response = _me(rag_url, token)
    assert response.status_code == 200, response.text
    assert response.json()["user_id"] == user["user"]["id"] == claims["sub"]


def test_token_minted_from_the_session_is_accepted(auth_url: str, rag_url: str, user: dict) -> None:
    minted = httpx.post(f"{auth_url}/auth/token",
                        headers={"Authorization": f"Bearer {user['session_token']}"}, timeout=10)
    assert minted.status_code == 200, minted.text
    assert _me(rag_url, minted.json()["access_token"]).status_code == 200


def test_missing_and_malformed_tokens_are_rejected(rag_url: str) -> None:
    _assert_rejected(httpx.get(f"{rag_url}/me"))
    _assert_rejected(httpx.get(f"{rag_url}/me", headers={"Authorization": "Basic abc"}))
    _assert_rejected(_me(rag_url, "not-a-jwt"))


def test_tampered_token_is_rejected(rag_url: str, user: dict) -> None:
    header, payload, signature = user["access_token"].split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = "someone-else"
    forged = ".".join([header, _b64(json.dumps(claims).encode()), signature])
    _assert_rejected(_me(rag_url, forged))


def test_alg_none_token_is_rejected(rag_url: str, user: dict) -> None:
    claims = jwt.decode(user["access_token"], options={"verify_signature": False})
    unsigned = ".".join([_b64(json.dumps({"alg": "none", "typ": "JWT"}).encode()),
                         _b64(json.dumps(claims).encode()), ""])
    _assert_rejected(_me(rag_url, unsigned))


def test_token_signed_by_a_foreign_key_is_rejected(rag_url: str, user: dict) -> None:
    real_header = jwt.get_unverified_header(user["access_token"])
    claims = jwt.decode(user["access_token"], options={"verify_signature": False})
    forged = jwt.encode(claims, Ed25519PrivateKey.generate(), algorithm="EdDSA",
                        headers={"kid": real_header["kid"]})
    _assert_rejected(_me(rag_url, forged))


def test_wrong_audience_is_rejected(rag_url: str, user: dict) -> None:
    claims = jwt.decode(user["access_token"], options={"verify_signature": False})
    claims["aud"] = "another-service"
    forged = jwt.encode(claims, Ed25519PrivateKey.generate(), algorithm="EdDSA")
    _assert_rejected(_me(rag_url, forged))


def test_logout_stops_minting(auth_url: str, rag_url: str) -> None:
    account = sign_up(auth_url)
    session = {"Authorization": f"Bearer {account['session_token']}"}
    assert httpx.post(f"{auth_url}/auth/logout", headers=session).status_code == 200
    assert httpx.post(f"{auth_url}/auth/token", headers=session).status_code == 401
