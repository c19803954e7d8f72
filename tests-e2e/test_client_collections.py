"""Collections through the Python clients against the real services: a personal collection
created, filled by save, upload and batch, listed and searched narrowed to it (and to the
default one), documents moved out, the emptied collection renamed and deleted; the async
client's collection calls and a chat narrowed to one collection; an organization's
collection written by its owner and only read by a member."""

from __future__ import annotations

import pytest

from clients_support import PASSWORD, account
from rag_client import (
    AsyncRagClient,
    BatchFile,
    BatchText,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    RagClient,
    SourcesEvent,
)
from stack import Service
from test_organizations import Member, delivered_invitation

TIDES = "Spring tides come with the new and the full moon, when sun and moon pull in a line."
LIGHTHOUSE = "Lighthouse keepers trimmed the lamp wicks every evening so the beam stayed bright all night."
BREAD = "Sourdough bread rises slowly with a starter fed on flour and water for several days."
GUIDE = (b"<html><head><title>Knot guide</title></head><body><p>A bowline makes a fixed loop that neither "
         b"slips nor jams.</p></body></html>")


def ids(documents) -> set[str]:
    return {d.id for d in documents}


def test_a_collection_is_filled_narrowed_to_emptied_and_deleted(auth_url: str, rag_url: str) -> None:
    with account(auth_url, rag_url) as client:
        harbour = client.create_collection("Harbour")
        assert (harbour.name, harbour.organization_id, harbour.role, harbour.can_write, harbour.is_default,
                harbour.document_count) == ("Harbour", None, "owner", True, False, 0)
        listed = client.list_collections()
        assert [(c.id, c.is_default) for c in listed] == [("personal", True), (harbour.id, False)]
        with pytest.raises(InvalidRequest) as taken:
            client.create_collection("Harbour")
        assert (taken.value.status, taken.value.code) == (409, "collection_exists")

        tides = client.save("Tides", TIDES, {"topic": "sea"}, collection_id=harbour.id).document_id
        batch = client.batch([BatchText("Lighthouse", LIGHTHOUSE, metadata={"topic": "sea"}),
                              BatchFile(("guide.html", GUIDE))], collection_id=harbour.id)
        assert [item.result for item in batch.items] == ["created", "created"]
        uploaded = client.upload([("bread.txt", BREAD.encode())], metadata={"topic": "food"},
                                 collection_id=harbour.id)[0].document_id
        personal = client.save("Bread", BREAD).document_id  # the same text, in the default collection
        assert personal != uploaded, "the same content is a document of its own in each collection"
        in_harbour = {tides, uploaded, *(item.document_id for item in batch.items)}

        narrowed = client.list_documents(collection_id=harbour.id, limit=10)
        assert narrowed.total == 4 and ids(narrowed.documents) == in_harbour
        assert {(d.collection_id, d.organization_id) for d in narrowed.documents} == {(harbour.id, None)}
        assert ids(client.iter_documents(collection_id="personal")) == {personal}
        assert client.get_document(personal).collection_id == "personal"
        assert client.list_documents().total == 5, "unnarrowed: every collection"
        assert client.get_collection(harbour.id).document_count == 4

        hits = client.search("spring tides and the moon", collection_id=harbour.id)
        assert hits[0].document_id == tides and {h.document_id for h in hits} <= in_harbour
        assert {h.document_id for h in client.search("spring tides and the moon", collection_id="personal")} \
            <= {personal}
        # filters and collection_id merge: a metadata filter still applies inside the collection.
        sea = client.search("bread flour starter", collection_id=harbour.id, filters={"metadata": {"topic": "food"}})
        assert {h.document_id for h in sea} == {uploaded}
        with pytest.raises(ValueError):
            client.search("tides", collection_id=harbour.id, filters={"collection_id": "personal"})

        with pytest.raises(InvalidRequest) as not_empty:
            client.delete_collection(harbour.id)
        assert (not_empty.value.status, not_empty.value.code) == (409, "collection_not_empty")
        with pytest.raises(InvalidRequest) as duplicate:
            client.move_document(uploaded, "personal")  # the default one holds the same bread text
        assert duplicate.value.code == "duplicate_in_collection"
        client.delete_document(uploaded)

        moved = client.move_document(tides, "personal")
        assert (moved.id, moved.collection_id, moved.status) == (tides, "personal", "ready")
        assert {h.document_id for h in client.search("spring tides and the moon", collection_id=harbour.id)} \
            .isdisjoint({tides}), "moved out: the collection's search no longer finds it"
        assert client.search("spring tides and the moon", collection_id="personal")[0].document_id == tides
        for item in batch.items:
            client.move_document(item.document_id, "personal")
        assert client.list_documents(collection_id=harbour.id).total == 0
        assert client.list_documents(collection_id="personal").total == 4

        assert client.rename_collection(harbour.id, "Old harbour").name == "Old harbour"
        client.delete_collection(harbour.id)
        with pytest.raises(NotFound):
            client.get_collection(harbour.id)
        assert [c.id for c in client.list_collections()] == ["personal"]


@pytest.mark.asyncio
async def test_the_async_client_manages_collections_and_chats_within_one(auth_url: str, rag_url: str) -> None:
    with account(auth_url, rag_url) as owner:
        email = owner.tokens.email
    async with AsyncRagClient(rag_url, auth_url, email=email, password=PASSWORD) as client:
        sea = await client.create_collection("Sea")
        assert ((await client.get_collection(sea.id)).name, sea.can_write) == ("Sea", True)
        result = await client.batch([BatchText("Tides", TIDES), BatchText("Lighthouse", LIGHTHOUSE)],
                                    collection_id=sea.id)
        sea_ids = {item.document_id for item in result.items}
        bread = (await client.save("Bread", BREAD)).document_id
        upload = await client.upload([("guide.html", GUIDE)], collection_id=sea.id)
        sea_ids.add(upload[0].document_id)
        page = await client.list_documents(collection_id=sea.id)
        assert ids(page.documents) == sea_ids

        answer = await client.chat("How does sourdough bread rise?", collection_id=sea.id)
        assert answer.sources and {s.document_id for s in answer.sources} <= sea_ids, "bread is not in Sea"
        events = [event async for event in client.chat_stream("How does sourdough bread rise?",
                                                               collection_id="personal")]
        sources = next(e for e in events if isinstance(e, SourcesEvent)).sources
        assert {s.document_id for s in sources} == {bread}
        hits = await client.search("lamp wicks", collection_id=sea.id, top_k=1)
        assert [h.title for h in hits] == ["Lighthouse"]

        for document_id in sea_ids:
            assert (await client.move_document(document_id, "personal")).collection_id == "personal"
        assert (await client.rename_collection(sea.id, "Ocean")).name == "Ocean"
        await client.delete_collection(sea.id)
        assert [c.id for c in await client.list_collections()] == ["personal"]


def test_an_organizations_collection_is_written_by_its_owner_and_read_by_a_member(
        stack: dict[str, Service], auth_url: str, rag_url: str) -> None:
    alice, carol = Member(auth_url), Member(auth_url)
    research = alice.create("Research")
    alice.invite(research, carol.email, "member")
    carol.org("POST", "accept-invitation", json={"invitationId": delivered_invitation(stack["auth"], carol.email)})
    with RagClient(rag_url, auth_url, email=alice.email, password=PASSWORD) as owner, \
            RagClient(rag_url, auth_url, email=carol.email, password=PASSWORD) as member:
        shared = owner.create_collection("Field notes", organization_id=research)
        assert (shared.organization_id, shared.role, shared.can_write) == (research, "owner", True)
        tides = owner.save("Tides", TIDES, collection_id=shared.id).document_id

        seen = [c for c in member.list_collections() if c.id == shared.id]
        assert [(c.name, c.role, c.can_write) for c in seen] == [("Field notes", "member", False)]
        listed = member.list_documents(collection_id=shared.id).documents
        assert [(d.id, d.organization_id) for d in listed] == [(tides, research)]
        assert member.search("spring tides", collection_id=shared.id)[0].document_id == tides

        with pytest.raises(PermissionDenied) as refused:
            member.save("Bread", BREAD, collection_id=shared.id)
        assert refused.value.code == "insufficient_role"
        with pytest.raises(PermissionDenied):
            member.create_collection("Mine", organization_id=research)
        with pytest.raises(PermissionDenied):
            member.move_document(tides, "personal")
        assert owner.get_collection(shared.id).document_count == 1
