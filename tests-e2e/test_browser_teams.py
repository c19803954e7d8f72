"""Teams in the example web app (examples/web), in headless Chromium against both real services.

The organization switcher: create an organization, invite by e-mail (the app also shows the
invitation id, pasted here; following the mailed link is tests-e2e/test_browser_accounts.py), accept it as the invitee (and not as anyone
else), a member cannot invite, switching the active organization re-mints the access JWT so
its `orgs` claim is current (the active organization first).

The shared collection: an owner creates an organization and a collection in it, invites B,
B accepts in the browser, the owner uploads into the organization's collection, B finds the
document by searching (all collections, and that collection), B as a member cannot upload
there and the app says why, and a third user C sees none of it: not in GET /collections, not
in search, 404 for the document (the rag-service's collections API: GET/POST /collections,
`collection_id` on uploads, `filters.collection_id` on search).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from browser_support import (
    browser,
    unique_email,
    PASSWORD,
    BrowserStack,
    access_token_from_page,
    app_state,
    ask,
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
from conftest import sign_up as sign_up_by_api

DOCUMENT_TITLE = "tidewater-handbook"
DOCUMENT_TEXT = (
    "Tidewater lab handbook.\n\n"
    "The Tidewater lab calibrates its salinity probes every Thursday at the Brackwell pier. "
    "Probe readings above forty grams per litre are flagged for review by the night shift.\n"
)
QUERY = "When are the salinity probes calibrated at Brackwell pier?"


@pytest.fixture(scope="module", autouse=True)
def _chromium_installed() -> None:
    require_chromium()


@pytest.fixture(scope="module")
def browser_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserStack]:
    with serving_web_app() as web_origin, running_browser_stack(
            tmp_path_factory.mktemp("teams-stack"), web_origin, "teams") as stack:
        yield stack


# ---- what a user does in the organization card ------------------------------------------------


def token_orgs(page) -> list[dict]:
    """The `orgs` claim of the page's current access JWT, in order (the active one first)."""
    return app_state(page, "orgs")


def create_organization(page, name: str) -> str:
    mints = app_state(page, "tokenMints")
    page.fill("#org-name", name)
    page.click("#org-create")
    notice_text(page, f"Created {name}")
    assert app_state(page, "tokenMints") > mints, "a new organization re-mints the token"
    org_id = app_state(page, "activeOrganizationId")
    assert org_id and page.input_value("#org-select") == org_id
    return org_id


def invite(page, email: str, role: str = "member") -> str:
    """Invites `email` to the active organization; returns the invitation id the app shows."""
    before = page.evaluate("() => document.getElementById('created-invitation-id')?.textContent || ''")
    page.fill("#invite-email", email)
    page.select_option("#invite-role", role)
    page.click("#invite")
    page.wait_for_function(
        "(old) => { const c = document.getElementById('created-invitation-id'); return c && c.textContent && c.textContent !== old; }",
        arg=before)
    return page.inner_text("#created-invitation-id").strip()


def accept_invitation(page, invitation_id: str) -> None:
    page.fill("#accept-invitation-id", invitation_id)
    page.click("#accept-invitation")


def switch_organization(page, organization_id: str | None) -> None:
    mints = app_state(page, "tokenMints")
    page.select_option("#org-select", organization_id or "")
    page.wait_for_function("(m) => window.ragApp.state.tokenMints > m", arg=mints)
    notice_text(page, "Switched to")
    assert app_state(page, "activeOrganizationId") == organization_id


# ---- what a user does with collections --------------------------------------------------------


def create_collection(page, name: str, organization_id: str | None) -> str:
    page.fill("#collection-name", name)
    page.select_option("#collection-owner", organization_id or "")
    page.click("#collection-create")
    notice_text(page, f'Created the collection "{name}"')
    collection_id = page.input_value("#upload-collection")
    assert collection_id not in ("", "personal")
    return collection_id


def search(page, query: str, collection_id: str = "") -> list[str]:
    """Searches from the chat card in one collection ("" = all); returns the hits' titles."""
    page.select_option("#search-collection", collection_id)
    page.fill("#question", query)
    with page.expect_response(lambda r: r.url.endswith("/search") and r.request.method == "POST") as answered:
        page.click("#search")
    assert answered.value.status == 200, answered.value.text()
    page.wait_for_selector("#search-results[data-state='done']")
    return page.locator("#search-results li.hit strong").all_inner_texts()


def assert_console_names_nobody(pages, *emails: str) -> None:
    """The app logs no e-mail address or name to the console (its failures are sentences)."""
    printed = "\n".join(pages.console)
    for secret in (*emails, "@example.com", "Owner", "Member", "Stranger"):
        assert secret not in printed, printed


def names_the_document(titles: list[str]) -> bool:
    return any(DOCUMENT_TITLE in title for title in titles)


def collection_row(page, collection_id: str):
    row = page.locator(f"#collections li[data-id='{collection_id}']")
    row.wait_for()
    return row


# ---- the tests --------------------------------------------------------------------------------


def test_organization_switcher_invitations_and_the_token_claim(browser, browser_stack: BrowserStack) -> None:
    stack = browser_stack
    with browser_pages(browser, stack.app_url, "teams-switcher") as pages:
        owner, member, stranger = pages.open("owner"), pages.open("member"), pages.open("stranger")
        member_email, owner_email = unique_email("member"), unique_email("owner")
        sign_up(owner, owner_email, "Owner")
        sign_up(member, member_email, "Member")
        sign_up(stranger, unique_email("stranger"), "Stranger")
        for page in (owner, member, stranger):
            assert token_orgs(page) == []
            assert page.locator("#org-select option").all_inner_texts() == ["Personal (no organization)"]
            assert page.is_hidden("#invite-form"), "no active organization: nobody to invite to"
        # Better Auth lists invitations only for verified addresses; the app says so instead.
        member.wait_for_selector("#invitations-hint:not([hidden])")

        # --- the owner creates an organization: it is active and the new token carries it ----
        research = create_organization(owner, "Research")
        assert token_orgs(owner) == [{"id": research, "role": "owner"}]
        assert "owner" in owner.inner_text("#org-role")
        shelf = create_collection(owner, "Research shelf", research)
        invitation = invite(owner, member_email)
        assert invitation and member_email not in owner.inner_text("#invitation-created")

        # --- someone else cannot accept it; the invitee can ------------------------------------
        accept_invitation(stranger, invitation)
        assert "addressed to another e-mail address" in error_text(stranger, "another e-mail address")
        assert token_orgs(stranger) == []
        accept_invitation(member, invitation)
        notice_text(member, "You joined Research as member")
        assert token_orgs(member) == [{"id": research, "role": "member"}]
        assert app_state(member, "activeOrganizationId") == research
        assert "Research (member)" in member.locator("#org-select option").all_inner_texts()
        # Without a reload, the collections list now has the organization's collection.
        assert collection_row(member, shelf).get_attribute("data-role") == "member"
        assert "Research shelf (Research, read only)" in member.locator("#search-collection option").all_inner_texts()
        accept_invitation(member, invitation)
        assert "accepted that invitation already" in error_text(member, "accepted that invitation already")

        # --- a member cannot invite: said in words --------------------------------------------
        invite_form_visible = member.is_visible("#invite-form")
        assert invite_form_visible
        member.fill("#invite-email", unique_email("friend"))
        member.click("#invite")
        assert "Only owners and admins of Research can invite" in error_text(member, "Only owners and admins")

        # --- switching re-mints: the active organization comes first in the claim --------------
        ops = create_organization(owner, "Ops")
        assert [o["id"] for o in token_orgs(owner)] == [ops, research]
        switch_organization(owner, research)
        assert [o["id"] for o in token_orgs(owner)] == [research, ops]
        switch_organization(member, None)
        assert token_orgs(member) == [{"id": research, "role": "member"}], "switching away keeps the membership"
        assert member.is_hidden("#invite-form")
        assert_console_names_nobody(pages, member_email)

        # --- the rag-service reads the same claim; a reload keeps the choice -------------------
        with httpx.Client(base_url=stack.rag, timeout=30) as api:
            me = api.get("/me", headers={"Authorization": f"Bearer {access_token_from_page(member, stack.auth)}"})
            assert me.status_code == 200, me.text
            assert {o["id"]: o["role"] for o in me.json()["orgs"]} == {research: "member"}
        member.reload()
        wait_until_loaded(member)
        assert member.locator("#org-select option").count() == 2
        assert member.input_value("#org-select") == ""
        assert app_state(member, "activeOrganizationId") is None

        # --- a new sign-in starts where the last one left off (Better Auth forgets it) -----------
        for page, email, expected in ((owner, owner_email, research), (member, member_email, None)):
            page.click("#sign-out")
            page.wait_for_selector("#auth-view:not([hidden])")
            sign_in(page, email, PASSWORD)
            wait_until_loaded(page)
            assert app_state(page, "activeOrganizationId") == expected
            assert page.input_value("#org-select") == (expected or "")
        assert [o["id"] for o in token_orgs(owner)] == [research, ops]  # the active one first again


def test_two_users_share_an_organization_collection_and_a_third_sees_none_of_it(
        browser, browser_stack: BrowserStack, tmp_path: Path) -> None:
    stack = browser_stack
    with browser_pages(browser, stack.app_url, "teams-collection") as pages:
        owner, member = pages.open("owner"), pages.open("member")
        member_email, owner_email = unique_email("member"), unique_email("owner")
        sign_up(owner, owner_email, "Owner")
        sign_up(member, member_email, "Member")

        # --- the owner: an organization, a collection in it, an invitation ----------------------
        lab = create_organization(owner, "Tidewater Lab")
        owner.wait_for_function(
            "(org) => [...document.querySelectorAll('#collection-owner option')].some((o) => o.value === org)", arg=lab)
        shared = create_collection(owner, "Lab notes", lab)
        row = collection_row(owner, shared)
        assert row.get_attribute("data-role") == "owner" and row.get_attribute("data-can-write") == "true"
        invitation = invite(owner, member_email)

        # --- B accepts in the browser and sees the collection, read only -----------------------
        accept_invitation(member, invitation)
        notice_text(member, "You joined Tidewater Lab as member")
        row = collection_row(member, shared)
        assert row.get_attribute("data-role") == "member" and row.get_attribute("data-can-write") == "false"
        assert "read only" in row.inner_text()

        # --- the owner uploads into the organization's collection ------------------------------
        doc_path = tmp_path / f"{DOCUMENT_TITLE}.txt"
        doc_path.write_text(DOCUMENT_TEXT)
        owner.select_option("#upload-collection", shared)
        owner.set_input_files("#file-input", str(doc_path))
        with owner.expect_response(lambda r: r.url.endswith("/documents/upload")) as uploaded:
            owner.click("#upload")
        assert uploaded.value.status == 201, uploaded.value.text()
        owner.wait_for_selector(f"#documents li.doc[data-status='ready']:has-text('{DOCUMENT_TITLE}')", timeout=60_000)
        doc_id = owner.locator("#documents li.doc", has_text=DOCUMENT_TITLE).get_attribute("data-id")

        # --- B finds it by searching everything, and by searching that collection -------------
        assert names_the_document(search(member, QUERY))
        assert not names_the_document(search(member, QUERY, "personal"))
        assert names_the_document(search(member, QUERY, shared))
        ask(member, QUERY)  # chat reads the collection picked for search: the shared one
        assert member.get_attribute("#answer", "data-state") == "done", member.inner_text("#message")
        assert DOCUMENT_TITLE in member.inner_text("#sources")

        # --- as a member B can neither add a collection to the organization nor upload into one ---
        member.fill("#collection-name", "Member's own")
        member.select_option("#collection-owner", lab)
        member.click("#collection-create")
        assert "Only owners and admins of Tidewater Lab can create collections" in error_text(member, "Only owners and admins")

        # B lists the shared document but cannot upload there: the app says why.
        member.select_option("#upload-collection", shared)
        member.wait_for_selector(f"#documents li.doc[data-id='{doc_id}']")
        mine = tmp_path / "member-draft.txt"
        mine.write_text("A member's draft that should not land in the shared collection.\n")
        member.set_input_files("#file-input", str(mine))
        with member.expect_response(lambda r: r.url.endswith("/documents/upload")) as refused:
            member.click("#upload")
        assert refused.value.status == 403, refused.value.text()
        message = error_text(member, "You cannot upload into")
        assert '"Lab notes" (Tidewater Lab)' in message and "member" in message, message
        assert member.locator("#documents li.doc").count() == 1

        assert_console_names_nobody(pages, member_email)
        owner_token = access_token_from_page(owner, stack.auth)
        member_token = access_token_from_page(member, stack.auth)

    # --- C, in no organization, sees none of it --------------------------------------------------
    outsider_token = sign_up_by_api(stack.auth)["access_token"]
    with httpx.Client(base_url=stack.rag, timeout=60) as api:
        def as_user(token: str) -> dict[str, str]:
            return {"Authorization": f"Bearer {token}"}

        listed = api.get("/collections", headers=as_user(outsider_token))
        assert listed.status_code == 200, listed.text
        assert shared not in [c["id"] for c in listed.json()["collections"]]
        assert all(c["organization_id"] is None for c in listed.json()["collections"])
        found = api.post("/search", headers=as_user(outsider_token),
                         json={"query": QUERY, "include_embedding": False})
        assert found.status_code == 200, found.text
        assert doc_id not in [hit["document_id"] for hit in found.json()["results"]]
        narrowed = api.post("/search", headers=as_user(outsider_token),
                            json={"query": QUERY, "include_embedding": False, "filters": {"collection_id": shared}})
        # docs/security.md: an outsider narrowing to the collection finds nothing (no error that tells it exists).
        assert narrowed.status_code == 200 and narrowed.json()["results"] == [], narrowed.text
        assert api.get(f"/documents/{doc_id}", headers=as_user(outsider_token)).status_code == 404
        assert doc_id not in [d.get("id", d.get("document_id")) for d in rag_documents(api, outsider_token)]
        intruding = api.post("/documents/upload", headers=as_user(outsider_token),
                             data={"collection_id": shared},
                             files={"files": ("intruder.txt", b"Not yours.\n", "text/plain")})
        assert intruding.status_code == 404 and intruding.json()["error"]["code"] == "not_found", intruding.text

        # The API agrees with what the browser showed: B reads, only the owner writes.
        assert api.get(f"/documents/{doc_id}", headers=as_user(member_token)).status_code == 200
        assert [d.get("id", d.get("document_id")) for d in rag_documents(api, member_token, collection_id=shared)] == [doc_id]
        refused = api.post("/documents/upload", headers=as_user(member_token), data={"collection_id": shared},
                           files={"files": ("draft.txt", b"Still not allowed.\n", "text/plain")})
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "insufficient_role", refused.text
        owned = api.get("/collections", headers=as_user(owner_token)).json()["collections"]
        assert [(c["role"], c["can_write"], c["document_count"]) for c in owned if c["id"] == shared] == [("owner", True, 1)]


def test_an_owner_deletes_the_organization_then_the_account(browser, browser_stack: BrowserStack) -> None:
    """The "Delete this organization" button (owners only) and the "Account" card: a sole owner of
    an organization with a member is told to transfer or delete it first; a wrong password deletes
    nothing; the right one deletes the account, signs out, and the credentials stop working."""
    stack = browser_stack
    with browser_pages(browser, stack.app_url, "teams-deletion") as pages:
        owner, member = pages.open("owner"), pages.open("member")
        owner_email, member_email = unique_email("owner"), unique_email("member")
        sign_up(owner, owner_email, "Owner")
        sign_up(member, member_email, "Member")
        lab = create_organization(owner, "Lab")
        assert owner.is_visible("#org-delete"), "an owner may delete the active organization"
        accept_invitation(member, invite(owner, member_email))
        notice_text(member, "You joined Lab as member")
        assert member.is_hidden("#org-delete"), "a member may not"

        def delete_account(page, password: str) -> None:
            if not page.is_visible("#delete-account-password"):
                page.click("#account-card summary")
            page.fill("#delete-account-password", password)
            page.click("#delete-account")

        delete_account(owner, PASSWORD)
        assert "only owner of an organization that has other members" in error_text(owner, "only owner")
        assert owner.is_visible("#app-view"), "still signed in: nothing was deleted"

        owner.once("dialog", lambda dialog: dialog.accept())
        owner.click("#org-delete")
        notice_text(owner, "Deleted Lab")
        assert token_orgs(owner) == []
        assert lab not in owner.locator("#org-select option").evaluate_all("(os) => os.map((o) => o.value)")

        delete_account(owner, "not my password at all")
        assert "Wrong password" in error_text(owner, "Wrong password")
        delete_account(owner, PASSWORD)
        notice_text(owner, "Your account was deleted")
        owner.wait_for_selector("#auth-view:not([hidden])")
        with httpx.Client(base_url=stack.auth, timeout=30) as auth:
            login = auth.post("/auth/login", json={"email": owner_email, "password": PASSWORD})
            assert login.status_code == 401, login.text
            # The member lost the organization with it.
            member_login = auth.post("/auth/login", json={"email": member_email, "password": PASSWORD})
            assert member_login.status_code == 200, member_login.text
            member_token = auth.post("/auth/token", headers={"Authorization": f"Bearer {member_login.json()['session_token']}"})
            assert "orgs" not in decode_claims(member_token.json()["access_token"])
        assert_console_names_nobody(pages, owner_email, member_email)


def decode_claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
