"""API keys across the real services, driven through the Python client: create / list /
revoke, the key -> JWT exchange, scope enforcement on every write route, token refresh."""

from __future__ import annotations

import time
import uuid

import httpx
import jwt
import pyotp
import pytest

from clients_support import PASSWORD, Clock, account, run_cli, run_cli_on_a_terminal
from conftest import sign_up
from rag_client import (
    AuthenticationError,
    BatchText,
    DeltaEvent,
    DoneEvent,
    NotFound,
    PermissionDenied,
    RagClient,
    SourcesEvent,
)

TEXT = "Lighthouse keepers trimmed the lamp wicks every evening so the beam stayed bright all night."


def claims(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def test_key_create_list_exchange_revoke(auth_url: str, rag_url: str) -> None:
    with account(auth_url, rag_url) as owner:
        read = owner.create_api_key("reader", "read", expires_in_days=7)
        write = owner.create_api_key("writer", "write")
        assert read.key and read.key.startswith("rag_") and write.expires_at is None
        listed = {k.id: k for k in owner.list_api_keys()}
        assert {(k.name, k.scope) for k in listed.values()} == {("reader", "read"), ("writer", "write")}
        assert all(k.key is None for k in listed.values()), "keys are shown once, never listed"

        with RagClient(rag_url, auth_url, api_key=read.key) as reader:
            token = reader.access_token()
            assert claims(token)["scope"] == "read"
            assert claims(token)["sub"] == claims(owner.access_token())["sub"]
            assert reader.list_documents().total == 0

        owner.revoke_api_key(read.id)
        assert [k.name for k in owner.list_api_keys()] == ["writer"]
        with RagClient(rag_url, auth_url, api_key=read.key) as revoked:
            with pytest.raises(AuthenticationError) as refused:
                revoked.list_documents()
        assert refused.value.code == "invalid_api_key"
        with pytest.raises(NotFound):
            owner.revoke_api_key(read.id)


def test_a_read_key_can_read_but_every_write_route_is_403(auth_url: str, rag_url: str) -> None:
    with account(auth_url, rag_url) as owner:
        document = owner.save("Lighthouse", TEXT)
        conversation = owner.chat("Why were the wicks trimmed?").conversation_id
        read_key = owner.create_api_key("reader", "read").key
        with RagClient(rag_url, auth_url, api_key=read_key) as reader:
            assert reader.search("lamp wicks")[0].document_id == document.document_id
            assert reader.chat("What did keepers trim?").sources
            assert reader.get_document(document.document_id).title == "Lighthouse"
            assert reader.history()["total"] >= 1 and reader.conversation(conversation)
            assert reader.summary().documents == 1

            writes = [lambda: reader.save("New", TEXT + " again"),
                      lambda: reader.upload([("new.txt", b"Fresh text about tides and harbours.")]),
                      lambda: reader.batch([BatchText("Batched", "Batched text about tides and harbours.")]),
                      lambda: reader.delete_document(document.document_id),
                      lambda: reader.delete_conversation(conversation)]
            for write in writes:
                with pytest.raises(PermissionDenied) as denied:
                    write()
                assert denied.value.code == "insufficient_scope"
            embed = httpx.post(f"{rag_url}/embed", json={"text": "tides"},
                               headers={"Authorization": f"Bearer {reader.access_token()}"})
            assert embed.status_code == 403 and embed.json()["error"]["code"] == "insufficient_scope"
        assert owner.summary().documents == 1 and owner.get_document(document.document_id)
        assert owner.conversation(conversation)

        write_key = owner.create_api_key("writer", "write").key
        with RagClient(rag_url, auth_url, api_key=write_key) as writer:
            assert writer.save("New", TEXT + " again").created
            assert writer.upload([("new.txt", b"Fresh text about tides and harbours.")])[0].created
            writer.delete_conversation(conversation)
            writer.delete_document(document.document_id)
        assert owner.summary().documents == 2


def test_the_client_refreshes_before_exp_and_once_on_401(auth_url: str, rag_url: str) -> None:
    exchanges = []
    http = httpx.Client(event_hooks={"request": [lambda r: exchanges.append(r.url.path)
                                                 if r.url.path == "/auth/token" else None]})
    with account(auth_url, rag_url) as owner:
        key = owner.create_api_key("refresh", "write").key
    clock = Clock()
    with RagClient(rag_url, auth_url, api_key=key, http=http, clock=clock) as client:
        client.list_documents()
        client.list_documents()
        assert len(exchanges) == 1, "a valid token is reused"
        # The server rejects the token (e.g. its key rotated): one refresh, then the call succeeds.
        client.tokens.access_token = client.tokens.access_token[:-4] + "AAAA"
        assert client.list_documents().total == 0
        assert len(exchanges) == 2
        # The lifetime has passed on the client's clock: refreshed before the call is made.
        clock.now += 15 * 60
        client.list_documents()
        assert len(exchanges) == 3
    http.close()


def test_chat_streams_typed_events_and_errors_carry_the_code(auth_url: str, rag_url: str) -> None:
    with account(auth_url, rag_url) as owner:
        saved = owner.save("Lighthouse", TEXT)
        events = list(owner.chat_stream("Why did keepers trim the wicks?"))
        assert isinstance(events[0], SourcesEvent) and isinstance(events[-1], DoneEvent)
        assert events[0].sources[0].document_id == saved.document_id
        assert "".join(e.text for e in events if isinstance(e, DeltaEvent)).strip()
        # The outcome travels with `done`: found, by the default generator, citing the page.
        done = events[-1]
        assert (done.answer_found, done.generator) == (True, "extractive") and done.cited_sources == [1]
        assert owner.conversation(events[-1].conversation_id)
        with pytest.raises(NotFound) as missing:
            owner.get_document("no-such-document")
        assert missing.value.code == "not_found" and missing.value.status == 404


@pytest.mark.asyncio
async def test_the_async_client_covers_the_same_routes(auth_url: str, rag_url: str) -> None:
    from rag_client import AsyncRagClient

    with account(auth_url, rag_url) as owner:
        key = owner.create_api_key("async", "write").key
    async with AsyncRagClient(rag_url, auth_url, api_key=key) as client:
        saved = await client.save("Lighthouse", TEXT)
        [uploaded] = await client.upload([("fog.md", b"# Fog\n\nFog horns sound every thirty seconds in fog.")])
        assert saved.created and uploaded.created
        assert (await client.search("lamp wicks"))[0].document_id == saved.document_id
        events = [event async for event in client.chat_stream("Why were wicks trimmed?")]
        assert isinstance(events[0], SourcesEvent) and isinstance(events[-1], DoneEvent)
        assert (await client.history())["total"] == 1
        assert (await client.summary()).documents == 2
        await client.delete_document(uploaded.document_id)
        with pytest.raises(NotFound):
            await client.get_document(uploaded.document_id)
        assert (await client.list_documents()).total == 1


def test_a_password_client_signs_in_again_when_its_session_has_ended(auth_url: str, rag_url: str) -> None:
    clock = Clock()
    with account(auth_url, rag_url, clock=clock) as client:
        client.list_documents()
        ended = client.tokens.session_token
        logout = httpx.post(f"{auth_url}/auth/logout", headers={"Authorization": f"Bearer {ended}"})
        assert logout.status_code == 200, logout.text
        clock.now += 15 * 60  # the access token (15 minutes) has expired
        assert client.list_documents().total == 0
        assert client.tokens.session_token and client.tokens.session_token != ended


def two_factor_account(auth_url: str) -> tuple[str, pyotp.TOTP, list[str]]:
    """A new account with two-factor codes turned on through Better Auth (the code confirming
    the set-up spends the current period's code): its email, authenticator and backup codes."""
    email = f"client-2fa-{uuid.uuid4().hex[:10]}@example.com"
    session = {"Authorization": f"Bearer {sign_up(auth_url, email=email, password=PASSWORD)['session_token']}"}
    enabled = httpx.post(f"{auth_url}/api/auth/two-factor/enable", json={"password": PASSWORD}, headers=session,
                         timeout=30)
    assert enabled.status_code == 200, enabled.text
    totp = pyotp.parse_uri(enabled.json()["totpURI"])
    assert isinstance(totp, pyotp.TOTP)
    confirmed = httpx.post(f"{auth_url}/api/auth/two-factor/verify-totp", json={"code": totp.now()},
                           headers=session, timeout=30)
    assert confirmed.status_code == 200, confirmed.text
    return email, totp, enabled.json()["backupCodes"]


def test_an_account_with_two_factor_codes_signs_in_through_the_client_with_its_code(auth_url: str,
                                                                                   rag_url: str) -> None:
    email, totp, backup_codes = two_factor_account(auth_url)

    # No code to give: the sign-in stops, and says why.
    with RagClient(rag_url, auth_url, email=email, password=PASSWORD) as client:
        with pytest.raises(AuthenticationError) as refused:
            client.list_documents()
    assert refused.value.code == "two_factor_required"
    with RagClient(rag_url, auth_url, email=email, password=PASSWORD, two_factor_code=lambda: "000000") as client:
        with pytest.raises(AuthenticationError) as wrong:
            client.list_documents()
    assert wrong.value.code == "invalid_code"

    # The next period's code (the one confirming the set-up was spent), then a backup code
    # when the session has ended and the client signs in again.
    codes = [totp.at(time.time() + totp.interval), backup_codes[0]]
    clock = Clock()
    with RagClient(rag_url, auth_url, email=email, password=PASSWORD, two_factor_code=lambda: codes.pop(0),
                   clock=clock) as client:
        client.save("Tides", TEXT)
        first_session = client.tokens.session_token
        logout = httpx.post(f"{auth_url}/auth/logout", headers={"Authorization": f"Bearer {first_session}"})
        assert logout.status_code == 200, logout.text
        clock.now += 15 * 60  # the access token (15 minutes) has expired
        assert client.list_documents().total == 1
        assert client.tokens.session_token not in (None, first_session)
    assert codes == []


def test_the_cli_asks_an_account_with_two_factor_codes_for_its_code(auth_url: str, rag_url: str) -> None:
    email, _, backup_codes = two_factor_account(auth_url)
    urls = {"rag_url": rag_url, "auth_url": auth_url, "email": email}

    # No terminal to ask on and no code given: it stops and says what to give.
    unasked = run_cli(["keys", "create", "unasked"], **urls)
    assert unasked.returncode == 1
    assert "two_factor_required" in unasked.stderr and "--two-factor-code" in unasked.stderr
    wrong = run_cli(["keys", "create", "wrong"], two_factor_code="000000", **urls)
    assert wrong.returncode == 1
    assert "invalid_code" in wrong.stderr

    # The code from the environment (RAG_TWO_FACTOR_CODE), then one typed on a terminal.
    from_environment = run_cli(["keys", "create", "from-environment"], two_factor_code=backup_codes[0], **urls)
    assert from_environment.returncode == 0, from_environment.stderr
    assert from_environment.stdout.startswith("rag_")
    typed, echoed = run_cli_on_a_terminal(["keys", "create", "typed"], typed=backup_codes[1],
                                          prompt="Two-factor code (or a backup code): ", **urls)
    assert typed.returncode == 0, typed.stderr
    assert typed.stdout.startswith("rag_")
    assert backup_codes[1].encode() not in echoed  # typed blind, as a password

    with RagClient(rag_url, auth_url, email=email, password=PASSWORD,
                   two_factor_code=lambda: backup_codes[2]) as client:
        assert sorted(key.name for key in client.list_api_keys()) == ["from-environment", "typed"]
