"""Membership changes from the auth-service: refusing organization tokens minted before one.

The auth-service records when a user's organization memberships change in a way that can reduce
access (removed, left, role changed, organization deleted) and publishes the recent ones at
`GET /api/auth/membership-changes?since=<epoch ms>` (also `/auth/membership-changes`):
`{"changes": [{"subject": sha256(user id) hex, "changed_at": unix s}], "now": epoch ms,
"retention_seconds": s, "truncated": bool}`, newest first. A `MembershipChangesPoller` fetches
it every `MEMBERSHIP_CHANGES_POLL_SECONDS` into `MembershipChanges`, which every request reads
(a dict lookup, no network): a token that carries `orgs` and whose `iat` is before its
subject's `changed_at` is refused (401 `token_stale`). The auth-service gives tokens minted
after a change an `iat` of at least that `changed_at`, so a fresh token always passes.

- A truncated answer (more changes than the auth-service lists at once) names only the newest:
  every token with `orgs` minted before the oldest listed change is refused (everyone concerned
  mints once more), which covers the changes left out.
- The auth-service unreachable, or an answer that does not parse: logged, the state is kept and
  the next poll tries again. Changes made meanwhile take effect when it answers again, or when
  the tokens expire (the window without this signal). Before the first answer, nothing is known.
- Entries are forgotten once older than the answer's `retention_seconds` (on the auth-service's
  clock): every token minted before them has expired.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from rag_service.config import Settings

log = logging.getLogger(__name__)

# Entries kept at most (~150 bytes each); past it the oldest are folded into the cutoff.
MAX_TRACKED = 200_000
# The next poll asks from this long before the last answer's `now`, rounded down to it: a change
# committed while the last answer was read is not missed, and replicas ask the same URL (the
# auth-service lets shared caches keep an answer for 2 s).
SINCE_OVERLAP_MS = 30_000
_SUBJECT = re.compile(r"^[0-9a-f]{64}$")


def subject_hash(user_id: str) -> str:
    """How the auth-service names a user in the list."""
    return hashlib.sha256(user_id.encode()).hexdigest()


def membership_changes_url(settings: Settings) -> str:
    """AUTH_MEMBERSHIP_CHANGES_URL, or the route beside AUTH_JWKS_URL (…/api/auth/jwks ->
    …/api/auth/membership-changes)."""
    if settings.auth_membership_changes_url:
        return settings.auth_membership_changes_url
    parts = urlsplit(settings.auth_jwks_url)
    path = parts.path.rsplit("/", 1)[0] + "/membership-changes"
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


class MembershipChanges:
    """Subject hash -> the latest `changed_at` (unix s), plus a cutoff for every subject (from
    truncated answers). Only the poller writes it; requests read it."""

    def __init__(self) -> None:
        self._changed: dict[str, int] = {}
        self._all_changed_before = 0  # every token with orgs minted before this is stale

    def __len__(self) -> int:
        return len(self._changed)

    def minted_before_change(self, user_id: str, issued_at: float) -> bool:
        """True when a token of `user_id` issued at `issued_at` predates a recorded change."""
        issued_at = float(issued_at)  # PyJWT lets a numeric string through as `iat`
        if issued_at < self._all_changed_before:
            return True
        if not self._changed:
            return False
        changed_at = self._changed.get(subject_hash(user_id))
        return changed_at is not None and issued_at < changed_at

    def apply(self, answer: Mapping[str, Any]) -> int:
        """Merges one parsed answer (`parse_answer`); returns how many entries it listed."""
        changes: list[tuple[str, int]] = answer["changes"]
        for subject, changed_at in changes:
            if changed_at > self._changed.get(subject, 0):
                self._changed[subject] = changed_at
        if answer["truncated"] and changes:
            self._all_changed_before = max(self._all_changed_before, min(at for _, at in changes))
        horizon = answer["now"] // 1000 - answer["retention_seconds"]
        self._changed = {s: at for s, at in self._changed.items() if at >= horizon}
        if len(self._changed) > MAX_TRACKED:
            self._fold_oldest()
        return len(changes)

    def _fold_oldest(self) -> None:
        """Keeps the newest MAX_TRACKED entries; the rest become the cutoff (conservative)."""
        ordered = sorted(self._changed.items(), key=lambda item: item[1], reverse=True)
        kept, dropped = ordered[:MAX_TRACKED], ordered[MAX_TRACKED:]
        self._all_changed_before = max(self._all_changed_before, max(at for _, at in dropped) + 1)
        self._changed = dict(kept)


def parse_answer(document: Any) -> dict[str, Any]:
    """The auth-service's answer, checked whole (ValueError otherwise: nothing of it is used)."""
    if not isinstance(document, dict):
        raise ValueError("not an object")
    changes, now = document.get("changes"), document.get("now")
    retention, truncated = document.get("retention_seconds"), document.get("truncated")
    if not isinstance(changes, list) or not isinstance(truncated, bool):
        raise ValueError("changes must be a list and truncated a boolean")
    if not _whole(now) or not _whole(retention) or retention <= 0:
        raise ValueError("now and retention_seconds must be positive integers")
    parsed: list[tuple[str, int]] = []
    for entry in changes:
        if not isinstance(entry, dict) or not isinstance(entry.get("subject"), str) \
                or not _SUBJECT.match(entry["subject"]) or not _whole(entry.get("changed_at")):
            raise ValueError("each change must be {subject: sha256 hex, changed_at: unix seconds}")
        parsed.append((entry["subject"], entry["changed_at"]))
    return {"changes": parsed, "now": now, "retention_seconds": retention, "truncated": truncated}


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


class MembershipChangesPoller:
    """Fetches the auth-service's list into `changes` every `interval` seconds (`run`)."""

    def __init__(self, url: str, changes: MembershipChanges, *, interval: float, timeout: float,
                 http_client: httpx.AsyncClient | None = None) -> None:
        self.url = url
        self.changes = changes
        self.interval = interval
        self._client = http_client or httpx.AsyncClient(timeout=timeout)
        self._owns_client = http_client is None
        self._last_now: int | None = None  # the last answer's `now` (epoch ms)
        self._failing = False

    @classmethod
    def from_settings(cls, settings: Settings, changes: MembershipChanges) -> MembershipChangesPoller:
        return cls(membership_changes_url(settings), changes, interval=settings.membership_changes_poll_seconds,
                   timeout=settings.jwks_timeout_seconds)

    def next_since(self) -> int | None:
        if self._last_now is None:
            return None  # everything the auth-service still lists
        return max(0, (self._last_now - SINCE_OVERLAP_MS) // SINCE_OVERLAP_MS * SINCE_OVERLAP_MS)

    async def poll_once(self) -> bool:
        """One fetch. False (logged, state kept) when the auth-service does not answer usably."""
        since = self.next_since()
        try:
            response = await self._client.get(self.url, params={} if since is None else {"since": since})
            response.raise_for_status()
            answer = parse_answer(response.json())
        except (httpx.HTTPError, ValueError) as exc:
            if not self._failing:
                log.warning("membership changes: the auth-service did not answer usably (%s); keeping "
                            "what is known and retrying every %.0f s", type(exc).__name__, self.interval)
            self._failing = True
            return False
        listed = self.changes.apply(answer)
        if self._failing:
            log.info("membership changes: the auth-service answers again")
        self._failing = False
        self._last_now = answer["now"]
        if answer["truncated"]:
            log.warning("membership changes: truncated answer (%d listed); tokens with organizations "
                        "minted before the oldest listed change are refused", listed)
        return True

    async def run(self) -> None:
        """Polls until cancelled; nothing raises out of it."""
        while True:
            try:
                await self.poll_once()
            except Exception:  # a bug must not stop the polling, nor take the service down
                log.exception("membership changes: poll failed")
            await asyncio.sleep(self.interval)

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()
