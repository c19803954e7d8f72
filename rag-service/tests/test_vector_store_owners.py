"""The vector store contract for organizations and collections, on every adapter (the
`store` fixture of test_vector_store_contract.py: Edge, qdrant-client local mode, pgvector).

A point carries its collection's owner (a user id or `org:<id>`) and, outside the owner's
default collection, its collection id. A caller reads the points of every owner in its
access (itself and its organizations), optionally narrowed to one collection; keyword IDF
is computed over exactly those owners' points.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from rag_service.core.roles import OrgRole
from rag_service.storage.access import Access, access_filter
from test_vector_store_contract import store  # noqa: F401 (fixture)
from vector_store_support import ALICE, BOB, MODES, chunk, ids, query, unit

pytestmark = pytest.mark.filterwarnings("ignore:Payload indexes have no effect in the local Qdrant")

ORG1, ORG2 = "org:o1", "org:o2"
ALICE_IN_O1 = Access(ALICE, {"o1": OrgRole.MEMBER})
ALICE_IN_BOTH = Access(ALICE, {"o1": OrgRole.MEMBER, "o2": OrgRole.ADMIN})

# One text per owner, all about the kernel, so every search could match every point.
PERSONAL = chunk(ALICE, "doc-personal", 0, "Alice's kernel notes on the scheduler.", unit(1))
NAMED = replace(chunk(ALICE, "doc-named", 0, "Alice's kernel notes filed in a collection.", unit(1, 0.2)),
                collection_id="c-alice")
IN_O1 = replace(chunk(ORG1, "doc-o1", 0, "The team's kernel runbook for the scheduler.", unit(1, 0.4)),
                collection_id="c-o1")
IN_O2 = replace(chunk(ORG2, "doc-o2", 0, "Another team's kernel scheduler handbook.", unit(1, 0.6)),
                collection_id="c-o2")
BOBS = chunk(BOB, "doc-bob", 0, "Bob's kernel scheduler diary.", unit(1, 0.8))
EVERY_POINT = [PERSONAL, NAMED, IN_O1, IN_O2, BOBS]


@pytest.fixture
async def owned(store):  # noqa: F811 (the fixture above)
    await store.upsert(EVERY_POINT)
    return store


async def found(store, access: Access, mode: str, **narrowing) -> set[str]:
    hits = await store.search(query("kernel scheduler", unit(1)), access_filter(access, **narrowing), limit=10,
                              mode=mode)
    return ids(hits)


@pytest.mark.parametrize("mode", MODES)
async def test_a_caller_reads_its_own_and_its_organizations_points_only(owned, mode):
    assert await found(owned, Access(ALICE), mode) == ids([PERSONAL, NAMED])
    assert await found(owned, ALICE_IN_O1, mode) == ids([PERSONAL, NAMED, IN_O1])
    assert await found(owned, ALICE_IN_BOTH, mode) == ids([PERSONAL, NAMED, IN_O1, IN_O2])
    # A member of o1 who is not Alice sees o1's point and nothing of Alice's.
    assert await found(owned, Access(BOB, {"o1": OrgRole.MEMBER}), mode) == ids([IN_O1, BOBS])
    assert await owned.count(access_filter(ALICE_IN_BOTH)) == 4


@pytest.mark.parametrize("mode", MODES)
async def test_a_collection_narrows_within_the_owners_the_caller_reads(owned, mode):
    # The default collection: the caller's own points that carry no collection id.
    assert await found(owned, ALICE_IN_BOTH, mode, collection_id="personal") == ids([PERSONAL])
    assert await found(owned, Access(BOB, {"o1": OrgRole.MEMBER}), mode, collection_id="personal") == ids([BOBS])
    assert await found(owned, ALICE_IN_BOTH, mode, collection_id="c-alice") == ids([NAMED])
    assert await found(owned, ALICE_IN_BOTH, mode, collection_id="c-o2") == ids([IN_O2])
    # Naming a collection of an owner the caller cannot read finds nothing.
    assert await found(owned, ALICE_IN_O1, mode, collection_id="c-o2") == set()
    assert await found(owned, Access(BOB), mode, collection_id="c-alice") == set()


async def test_keyword_idf_counts_exactly_the_owners_the_caller_reads(store):  # noqa: F811
    # "scheduler" is in one of Alice's two chunks, and in every chunk of o1: with o1 in her
    # access the term is common, so it weighs less in her own chunk's score.
    rare = chunk(ALICE, "doc-a", 0, "The scheduler picks the next task.", unit(1))
    plain = chunk(ALICE, "doc-a", 1, "Pages of memory are swapped out.", unit(0, 1))
    team = [replace(chunk(ORG1, f"doc-t{i}", 0, f"Scheduler note {i} of the team.", unit(0, 0, 1)),
                    collection_id="c-o1") for i in range(4)]
    await store.upsert([rare, plain, *team])

    async def score(access: Access, **narrowing) -> float:
        [hit] = [h for h in await store.search(query("scheduler", unit(1)), access_filter(access, **narrowing),
                                               limit=10, mode="keyword") if h.id == rare.id]
        return hit.score

    alone, with_team = await score(Access(ALICE)), await score(ALICE_IN_O1)
    assert with_team < alone
    # Narrowing to a collection does not change the statistics (they are the caller's owners').
    assert await score(ALICE_IN_O1, collection_id="personal") == pytest.approx(with_team)
    # Points of owners outside the caller's access never move its scores.
    await store.upsert([chunk(BOB, f"doc-b{i}", 0, "scheduler scheduler", unit(1)) for i in range(3)])
    assert await score(ALICE_IN_O1) == pytest.approx(with_team)
