"""Who owns what in bench/access_filter.py, who may read what, and the check of every hit.

Documents (bench/store_fill.py numbering, 50 chunks each) are placed in cycles of ten: one
per organization (its two collections alternating), the rest the users' own, round-robin,
alternately in the default personal collection and in a personal collection of their own.
Users come in fives: in no organization, one, two, one, two (each organization has four
members of ten). The filters are those `storage.access.access_filter` builds for them.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from store_fill import CHUNKS_PER_DOCUMENT

from rag_service.core.roles import OrgRole
from rag_service.storage.access import Access, access_filter, org_owner
from rag_service.storage.vectors import DEFAULT_COLLECTION, ChunkFilter, ChunkHit

CYCLE = 10  # of every ten documents, one per organization; the rest are users' own
PER_USER = "per-user filter (no organization)"


def collection_id(name: str) -> str:
    """A collection id as the service makes them (a UUID), stable across runs."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"rag-bench/{name}"))


@dataclass(frozen=True)
class Layout:
    """Who owns each document, in which collection, and who belongs to which organization."""

    users: int
    orgs: int

    def user(self, index: int) -> str:
        return f"bench-user-{index}"

    def org(self, index: int) -> str:
        return f"bench-org-{index}"

    def org_collection(self, org: int, half: int) -> str:
        return collection_id(f"org-{org}-{'ab'[half]}")

    def place(self, document: int) -> tuple[str, str]:
        """(owner key, collection id) of a document's chunks."""
        cycle, slot = divmod(document, CYCLE)
        if slot < self.orgs:
            return org_owner(self.org(slot)), self.org_collection(slot, cycle % 2)
        personal = cycle * (CYCLE - self.orgs) + slot - self.orgs  # the n-th personal document
        owner, turn = self.user(personal % self.users), personal // self.users
        return owner, DEFAULT_COLLECTION if turn % 2 == 0 else collection_id(f"{owner}-notes")

    def memberships(self, index: int) -> tuple[int, ...]:
        """Five users in a row: none, one, two, one, two organizations (2/4/4 of ten)."""
        kind = index % 5
        count = 0 if kind == 0 else 1 if kind in (1, 3) else 2
        return tuple(sorted({(index + k) % self.orgs for k in range(count)}))

    def access(self, index: int) -> Access:
        orgs = self.memberships(index)
        # Roles do not change what a member reads; the first of each user's is admin for realism.
        return Access(self.user(index), {self.org(o): OrgRole.ADMIN if k == 0 else OrgRole.MEMBER
                                         for k, o in enumerate(orgs)})


@dataclass(frozen=True)
class Caller:
    access: Access
    where: ChunkFilter
    readable: frozenset[tuple[str, str | None]]  # (owner, collection or None: any) it may get hits from


def variants(layout: Layout) -> dict[str, list[Caller]]:
    """Each filter variant, as the callers it rotates over."""
    everyone = [layout.access(i) for i in range(layout.users)]
    in_one = [a for a in everyone if len(a.orgs) == 1]
    in_two = [a for a in everyone if len(a.orgs) == 2]
    if not in_one or not in_two:
        raise SystemExit("needs --users 5 and --orgs 2 or more: some users in one organization, some in two")

    def any_collection(access: Access) -> frozenset[tuple[str, str | None]]:
        return frozenset((owner, None) for owner in access.readable_owners)

    def org_collection(access: Access, org: str, half: int) -> Caller:
        chosen = layout.org_collection(int(org.rsplit("-", 1)[1]), half)
        return Caller(access, access_filter(access, collection_id=chosen), frozenset({(org_owner(org), chosen)}))

    return {
        PER_USER: [Caller(Access(a.user_id), access_filter(Access(a.user_id)), frozenset({(a.user_id, None)}))
                   for a in everyone],
        "user in 1 organization": [Caller(a, access_filter(a), any_collection(a)) for a in in_one],
        "user in 2 organizations": [Caller(a, access_filter(a), any_collection(a)) for a in in_two],
        # Every collection of each of their organizations, users and organizations alternating.
        "user in 2, one organization collection": [
            org_collection(a, a.orgs[k][0], half) for half in (0, 1) for k in (0, 1) for a in in_two],
        "user in 2, personal collection": [
            Caller(a, access_filter(a, collection_id=DEFAULT_COLLECTION), frozenset({(a.user_id, DEFAULT_COLLECTION)}))
            for a in in_two],
    }


class Check:
    """The correctness invariants, counted over every search of the run."""

    def __init__(self, layout: Layout, documents: int) -> None:
        self.placed = {f"bench-doc-{d:07d}": layout.place(d) for d in range(documents)}
        self.hits = self.org_hits = 0
        self.violations: list[str] = []

    def expected_count(self, caller: Caller) -> int:
        return CHUNKS_PER_DOCUMENT * sum(
            (owner, None) in caller.readable or (owner, collection) in caller.readable
            for owner, collection in self.placed.values())

    def hits_of(self, caller: Caller, hits: list[ChunkHit]) -> None:
        for hit in hits:
            owner, collection = self.placed[hit.document_id]
            self.hits += 1
            self.org_hits += owner.startswith("org:")
            if (owner, None) not in caller.readable and (owner, collection) not in caller.readable:
                self.violations.append(f"{caller.access.user_id} got a chunk of {owner} ({collection})")
