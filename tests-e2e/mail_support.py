"""A real SMTP server (aiosmtpd) on a free loopback port that keeps the auth-service's mails,
parsed with the standard library, and the app links in them (`...#verify-email=<token>`)."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email import message_from_bytes, policy

from aiosmtpd.controller import Controller

from stack import free_port


@dataclass
class Mail:
    to: str
    subject: str
    text: str
    html: str

    @property
    def link(self) -> str:
        """The app link in the text part (the one link every mail carries)."""
        match = re.search(r"https?://\S+#\S+", self.text)
        assert match, self.text
        return match.group(0)


class Inbox:
    def __init__(self) -> None:
        self.mails: list[Mail] = []
        self._changed = threading.Condition()
        self.url = ""

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802 - aiosmtpd's hook name
        message = message_from_bytes(envelope.original_content, policy=policy.default)
        text = message.get_body(preferencelist=("plain",))
        html = message.get_body(preferencelist=("html",))
        with self._changed:
            for rcpt in envelope.rcpt_tos:
                self.mails.append(Mail(to=rcpt.lower(), subject=str(message["subject"]),
                                       text=text.get_content() if text else "",
                                       html=html.get_content() if html else ""))
            self._changed.notify_all()
        return "250 OK"

    def wait_for(self, to: str, subject: str, after: int = 0, timeout: float = 30.0) -> Mail:
        """The first mail to `to` whose subject contains `subject`, skipping the first `after`
        such mails (already read); waits for it to arrive."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = [m for m in self.mails if m.to == to.lower() and subject in m.subject]
                if len(found) > after:
                    return found[after]
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"no mail {subject!r} to {to} within {timeout}s: {[m.subject for m in self.mails]}"
                self._changed.wait(remaining)

    def count(self, to: str, subject: str) -> int:
        with self._changed:
            return sum(1 for m in self.mails if m.to == to.lower() and subject in m.subject)


@contextmanager
def smtp_inbox() -> Iterator[Inbox]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    inbox.url = f"smtp://127.0.0.1:{port}"
    try:
        yield inbox
    finally:
        controller.stop()
