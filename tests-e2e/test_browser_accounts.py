"""Accounts by mail in the example web app (examples/web), in headless Chromium against both real
services, with EMAIL_VERIFICATION=required and every mail caught by a real SMTP server (aiosmtpd):

- sign up, open the mail, follow its link (verified and signed in), sign out, sign in;
- the sessions list: a second browser shows up and is signed out from the first;
- forgot password: the mailed link opens the reset form, the new password works, the sessions
  that were open are dead;
- invite by e-mail: the invitee follows the mailed link, creates an account (confirming the
  address), and accepts the invitation the link named.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from browser_support import (
    browser,
    unique_email,
    PASSWORD,
    BrowserStack,
    app_state,
    browser_pages,
    error_text,
    notice_text,
    require_chromium,
    running_browser_stack,
    serving_web_app,
    wait_until_loaded,
)
from mail_support import Inbox, smtp_inbox

NEW_PASSWORD = "a fresh passphrase for the lab"


@pytest.fixture(scope="module", autouse=True)
def _chromium_installed() -> None:
    require_chromium()


@pytest.fixture(scope="module")
def inbox() -> Iterator[Inbox]:
    with smtp_inbox() as caught:
        yield caught


@pytest.fixture(scope="module")
def browser_stack(tmp_path_factory: pytest.TempPathFactory, inbox: Inbox) -> Iterator[BrowserStack]:
    with serving_web_app() as web_origin, running_browser_stack(
            tmp_path_factory.mktemp("accounts-stack"), web_origin, "accounts",
            auth_env={"SMTP_URL": inbox.url, "EMAIL_VERIFICATION": "required",
                      "MAIL_FROM": "Example app <no-reply@example.com>"}) as stack:
        yield stack


def create_account(page, email: str, name: str) -> None:
    """Fills the sign-up form; with verification required the app asks to check the inbox."""
    page.fill("#email", email)
    page.fill("#password", PASSWORD)
    page.fill("#name", name)
    page.click("#sign-up")
    notice_text(page, "Check your inbox")
    assert page.is_visible("#auth-view"), "no session before the address is confirmed"


def follow(page, link: str) -> None:
    """Opens a mailed link in the page, as clicking it in a mail client would."""
    page.goto(link)


def sign_in(page, email: str, password: str = PASSWORD) -> None:
    page.fill("#email", email)
    page.fill("#password", password)
    page.click("#sign-in")
    wait_until_loaded(page)


def verified_account(page, inbox: Inbox, email: str, name: str) -> None:
    create_account(page, email, name)
    follow(page, inbox.wait_for(email, "Confirm your email address").link)
    notice_text(page, "Your email address is confirmed")
    wait_until_loaded(page)


def test_sign_up_open_the_mail_verify_sign_in(browser, browser_stack: BrowserStack, inbox: Inbox) -> None:
    stack = browser_stack
    with browser_pages(browser, stack.app_url, "accounts-verify") as pages:
        page = pages.open("person")
        email = unique_email("ada")
        create_account(page, email, "Ada")
        mail = inbox.wait_for(email, "Confirm your email address")
        assert mail.link.startswith(f"{stack.app_url}#verify-email="), mail.link
        assert mail.link in mail.html.replace("&amp;", "&"), "the HTML part carries the same link"

        # Signing in before confirming: refused with a sentence, and a fresh link is mailed.
        page.fill("#email", email)
        page.fill("#password", PASSWORD)
        page.click("#sign-in")
        assert "Confirm your email address first" in error_text(page, "Confirm your email address first")
        fresh = inbox.wait_for(email, "Confirm your email address", after=1)

        follow(page, fresh.link)
        notice_text(page, "Your email address is confirmed")
        wait_until_loaded(page)
        assert email in page.inner_text("#user-email")
        assert page.is_hidden("#verify-banner"), "a confirmed address needs no banner"
        assert "#" not in page.url, "the token left the address bar"

        page.click("#sign-out")
        page.wait_for_selector("#auth-view:not([hidden])")
        sign_in(page, email)
        assert app_state(page, "user.email") == email


def test_sessions_and_forgot_password_end_the_old_sessions(browser, browser_stack: BrowserStack, inbox: Inbox) -> None:
    stack = browser_stack
    with browser_pages(browser, stack.app_url, "accounts-reset") as pages:
        first, second, forgetful = pages.open("first"), pages.open("second"), pages.open("forgetful")
        email = unique_email("grace")
        verified_account(first, inbox, email, "Grace")
        sign_in(second, email)

        # --- the sessions card: both browsers listed; the first signs the second out -----------
        first.reload()
        wait_until_loaded(first)
        first.wait_for_function("() => document.querySelectorAll('#sessions li').length === 2")
        assert first.locator("#sessions li[data-current='true']").count() == 1
        first.locator("#sessions li[data-current='false'] button").click()
        notice_text(first, "Signed out")
        first.wait_for_function("() => document.querySelectorAll('#sessions li').length === 1")
        second.reload()
        second.wait_for_selector("#auth-view:not([hidden])")

        # --- forgot password from a third browser ------------------------------------------------
        forgetful.click("#forgot-link")
        forgetful.fill("#forgot-email", email)
        forgetful.click("#forgot-submit")
        forgetful.wait_for_selector("#forgot-view", state="hidden")
        notice_text(forgetful, "If an account uses that address")
        # An unknown address gets the same sentence and no mail.
        nobody = unique_email("nobody")
        forgetful.click("#forgot-link")
        forgetful.fill("#forgot-email", nobody)
        forgetful.click("#forgot-submit")
        forgetful.wait_for_selector("#forgot-view", state="hidden")
        notice_text(forgetful, "If an account uses that address")
        reset = inbox.wait_for(email, "Reset your password")
        follow(forgetful, reset.link)
        forgetful.wait_for_selector("#reset-view:not([hidden])")
        forgetful.fill("#new-password", NEW_PASSWORD)
        forgetful.click("#reset-submit")
        notice_text(forgetful, "Your password is changed")
        assert inbox.count(nobody, "") == 0

        # --- the session that was open is dead; the link works once; the new password works ------
        first.reload()
        first.wait_for_selector("#auth-view:not([hidden])")
        follow(forgetful, reset.link)
        forgetful.wait_for_selector("#reset-view:not([hidden])")
        forgetful.fill("#new-password", "yet another passphrase 9")
        forgetful.click("#reset-submit")
        assert "no longer valid" in error_text(forgetful, "no longer valid")
        forgetful.click("#reset-back")
        sign_in(forgetful, email, NEW_PASSWORD)


def test_invite_by_email_and_accept_from_the_link(browser, browser_stack: BrowserStack, inbox: Inbox) -> None:
    stack = browser_stack
    with browser_pages(browser, stack.app_url, "accounts-invite") as pages:
        owner, invitee = pages.open("owner"), pages.open("invitee")
        verified_account(owner, inbox, unique_email("owner"), "Owner")
        owner.fill("#org-name", "Brackwell Pier")
        owner.click("#org-create")
        notice_text(owner, "Created Brackwell Pier")
        organization = app_state(owner, "activeOrganizationId")

        invitee_email = unique_email("newcomer")
        owner.fill("#invite-email", invitee_email)
        owner.click("#invite")
        owner.wait_for_selector("#invitation-created:not([hidden])")
        assert "Invitation mailed" in owner.inner_text("#invitation-created")

        mail = inbox.wait_for(invitee_email, "You are invited to join Brackwell Pier")
        assert "Owner invited you to join Brackwell Pier as member" in mail.text
        follow(invitee, mail.link)
        notice_text(invitee, "to answer the invitation")
        create_account(invitee, invitee_email, "Newcomer")
        follow(invitee, inbox.wait_for(invitee_email, "Confirm your email address").link)
        wait_until_loaded(invitee)
        invitee.wait_for_selector("#invitation-card:not([hidden])")
        assert "Brackwell Pier" in invitee.inner_text("#invitation-text")
        invitee.click("#invitation-accept")
        notice_text(invitee, "You joined Brackwell Pier as member")
        assert app_state(invitee, "orgs") == [{"id": organization, "role": "member"}]
        assert invitee.is_hidden("#invitation-card")

        # The same link again: the app says it was accepted already.
        follow(invitee, mail.link)
        wait_until_loaded(invitee)
        assert "accepted that invitation already" in error_text(invitee, "accepted that invitation already")
