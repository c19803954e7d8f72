"""Recent account changes that make tokens minted before them stale.

Filled from the auth-service's account events feed by each replica's own follower
(accounts/staleness.py) and read by every request (a few dict lookups, no network, in
`deps.current_user`):

- `member.removed` / `member.role_changed` of a user: a token of that user that carries
  `orgs` and whose `iat` is before the change is refused (401 `token_stale`); a token without
  `orgs` has nothing to take back;
- `organization.deleted`: a token carrying that organization, minted before, is refused
  (`token_stale`); the feed also lists a `member.removed` per member, this covers a token
  even before those are read;
- `user.deleted`: every token of that user minted before the deletion is refused
  (401 `account_deleted`), organizations or not.

Times are whole seconds: a change at `occurred_at` (epoch ms) counts from
ceil(occurred_at / 1000), and the auth-service gives every token minted after a change an `iat`
at or after that second, so a fresh token always passes.

Entries older than the longest token lifetime (`ACCESS_TOKEN_MAX_AGE_SECONDS`) are
forgotten: every token minted before them has expired. Past `max_tracked` entries the oldest
are folded into a cutoff: every token with `orgs` minted before it is refused (conservative;
everyone concerned mints once more).
"""

from __future__ import annotations

from collections.abc import Iterable

from rag_service.config import Settings

# Entries kept at most per kind (~150 bytes each).

STALE = "token_stale"
DELETED = "account_deleted"


def change_second(occurred_at_ms: int) -> int:
    """The first whole second at or after a change (what the auth-service's `iat` respects)."""
    return -(-occurred_at_ms // 1000)


class MembershipChanges:
    """User id -> latest membership change, organization id -> deletion, user id -> deletion
    (unix seconds). Only the follower writes it; requests read it."""

    def __init__(self, max_tracked: int = Settings.model_fields["max_tracked_membership_changes"].default) -> None:
        self._max_tracked = max_tracked
        self._members: dict[str, int] = {}
        self._organizations: dict[str, int] = {}
        self._deleted: dict[str, int] = {}
        self._all_changed_before = 0  # every token with orgs minted before this is stale

    def __len__(self) -> int:
        return len(self._members) + len(self._organizations) + len(self._deleted)

    # --- reads (every request) -------------------------------------------------------------

    def refusal(self, user_id: str, issued_at: float, orgs: Iterable[str] = ()) -> str | None:
        """Why a token of `user_id` issued at `issued_at` carrying `orgs` must be refused
        (`account_deleted` / `token_stale`), or None."""
        issued_at = float(issued_at)  # PyJWT lets a numeric string through as `iat`
        deleted_at = self._deleted.get(user_id)
        if deleted_at is not None and issued_at < deleted_at:
            return DELETED
        orgs = tuple(orgs)
        if not orgs:
            return None
        if issued_at < self._all_changed_before:
            return STALE
        changed_at = self._members.get(user_id)
        if changed_at is not None and issued_at < changed_at:
            return STALE
        for org in orgs:
            deleted_org_at = self._organizations.get(org)
            if deleted_org_at is not None and issued_at < deleted_org_at:
                return STALE
        return None

    # --- writes (the follower) ----------------------------------------------------------------

    def member_changed(self, user_id: str, occurred_at_ms: int) -> None:
        _keep_latest(self._members, user_id, change_second(occurred_at_ms))

    def organization_deleted(self, organization_id: str, occurred_at_ms: int) -> None:
        _keep_latest(self._organizations, organization_id, change_second(occurred_at_ms))

    def user_deleted(self, user_id: str, occurred_at_ms: int) -> None:
        _keep_latest(self._deleted, user_id, change_second(occurred_at_ms))

    def forget_before(self, horizon: int) -> None:
        """Drops entries older than `horizon` (unix s): no token minted before them is alive."""
        for entries in (self._members, self._organizations, self._deleted):
            for key in [key for key, at in entries.items() if at < horizon]:
                del entries[key]
            if len(entries) > self._max_tracked:
                self._fold_oldest(entries)

    def _fold_oldest(self, entries: dict[str, int]) -> None:
        """Keeps the newest `max_tracked` entries; the rest become the cutoff (conservative)."""
        ordered = sorted(entries.items(), key=lambda item: item[1], reverse=True)
        kept, dropped = ordered[:self._max_tracked], ordered[self._max_tracked:]
        self._all_changed_before = max(self._all_changed_before, max(at for _, at in dropped) + 1)
        entries.clear()
        entries.update(kept)


def _keep_latest(entries: dict[str, int], key: str, at: int) -> None:
    if at > entries.get(key, 0):
        entries[key] = at
