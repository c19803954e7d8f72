"""Collections over HTTP (real app, real EdDSA tokens with `orgs` claims, SQLite and
PostgreSQL): the routes, and isolation on every route. An outsider sees nothing of an
organization's collection (404, absent from listings, search, chat and counts); a member
reads it but every write is 403 `insufficient_role`; admins and owners write; a token
without the organization loses access at once. The `orgs` parser itself is
test_auth_orgs.py; the vector store's owner filter is test_vector_store_contract.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from collections_support import (
    assert_forbidden,
    assert_not_found,
    batch,
    caller,
    collection_ids,
    create_collection,
    finds_everywhere,
    found,
    listed,
    move,
    new_org,
    points_of,
    save,
    summary_documents,
    upload,
)
from rag_service.storage.access import org_owner
from security_support import assert_json_error

TEAM_TEXT = "The heliotrope reactor in the Kestrel lab vents argon every ninety minutes."
TEAM_QUERY = "heliotrope reactor argon venting Kestrel"


@pytest.fixture
async def team(db_client: Any, db_app: Any, auth_headers: Any) -> dict[str, Any]:
    """An organization with one collection holding one document, and a caller of each kind."""
    org = new_org()
    world: dict[str, Any] = {"org": org, "runtime": db_app.state.runtime}
    for role in ("owner", "admin", "member"):
        world[role] = caller(auth_headers, {org: role})
    world["outsider"] = caller(auth_headers)
    world["stranger"] = caller(auth_headers, {new_org(): "owner"})  # in another organization
    world["collection"] = (await create_collection(db_client, world["admin"], "Lab notes", org))["id"]
    world["doc"] = await save(db_client, world["admin"], "Reactor", TEAM_TEXT, world["collection"])
    return world


async def test_collection_routes(db_client, auth_headers):
    me = caller(auth_headers)
    [default] = (await db_client.get("/collections", headers=me.headers)).json()["collections"]
    assert default == {"id": "personal", "name": "Personal", "organization_id": None, "role": "owner",
                       "can_write": True, "is_default": True, "document_count": 0, "created_at": None}

    notes = await create_collection(db_client, me, "  Notes  ")
    assert notes["name"] == "Notes" and notes["role"] == "owner" and notes["can_write"] and not notes["is_default"]
    assert notes["organization_id"] is None and notes["created_at"].endswith("+00:00")
    archive = await create_collection(db_client, me, "Archive")
    assert await collection_ids(db_client, me) == ["personal", archive["id"], notes["id"]]
    names = [c["name"] for c in (await db_client.get("/collections", headers=me.headers)).json()["collections"]]
    assert names == ["Personal", "Archive", "Notes"]  # default first, then by name
    assert (await db_client.get(f"/collections/{notes['id']}", headers=me.headers)).json() == notes

    # Names are unique per owner; another user (and an organization) may reuse them.
    for body in ({"name": "Notes"}, {"name": " Notes"}):
        error = assert_json_error(await db_client.post("/collections", json=body, headers=me.headers), 409)
        assert error["code"] == "collection_exists"
    await create_collection(db_client, caller(auth_headers), "Notes")
    assert assert_json_error(await db_client.patch(f"/collections/{notes['id']}", json={"name": "Archive"},
                                                   headers=me.headers), 409)["code"] == "collection_exists"
    renamed = await db_client.patch(f"/collections/{notes['id']}", json={"name": "Field notes"}, headers=me.headers)
    assert renamed.status_code == 200 and renamed.json()["name"] == "Field notes", renamed.text

    # The default collection is not a row: it cannot be renamed or deleted.
    assert_json_error(await db_client.patch("/collections/personal", json={"name": "Mine"}, headers=me.headers), 422)
    assert_json_error(await db_client.delete("/collections/personal", headers=me.headers), 422)
    assert (await db_client.get("/collections/personal", headers=me.headers)).json()["is_default"]

    # A collection holding documents is not deleted; once empty it is.
    document = await save(db_client, me, "Note", "Otters hold hands while they sleep.", notes["id"])
    assert (await db_client.get(f"/collections/{notes['id']}", headers=me.headers)).json()["document_count"] == 1
    error = assert_json_error(await db_client.delete(f"/collections/{notes['id']}", headers=me.headers), 409)
    assert error["code"] == "collection_not_empty"
    assert (await db_client.delete(f"/documents/{document}", headers=me.headers)).status_code == 200
    assert (await db_client.delete(f"/collections/{notes['id']}", headers=me.headers)).status_code == 204
    assert_not_found(await db_client.get(f"/collections/{notes['id']}", headers=me.headers))
    assert_not_found(await db_client.delete(f"/collections/{notes['id']}", headers=me.headers))
    # Saving into a collection that does not exist (or is gone) is a 404, not a new collection.
    assert_not_found(await db_client.post("/save-document", json={"title": "t", "content": "Lost otters.",
                                                                  "collection_id": notes["id"]}, headers=me.headers))


@pytest.mark.parametrize("body", [
    {}, {"name": ""}, {"name": "   "}, {"name": "x" * 101}, {"name": "tab\there"}, {"name": "nul\x00"},
    {"name": "bell\x07"}, {"name": 7}, {"name": None}, {"name": ["a"]}, {"name": "ok", "owner": "someone"},
    {"name": "ok", "organization_id": ""}, {"name": "ok", "organization_id": "o" * 65},
], ids=lambda body: repr(body)[:30])
async def test_invalid_collection_bodies_are_422(db_client, auth_headers, body):
    me = caller(auth_headers)
    assert_json_error(await db_client.post("/collections", json=body, headers=me.headers), 422)
    assert await collection_ids(db_client, me) == ["personal"]


async def test_an_outsider_sees_nothing_of_an_organizations_collection(db_client, team, auth_headers):
    client, collection, doc = db_client, team["collection"], team["doc"]
    chunks = await points_of(team["runtime"].vector_store, org_owner(team["org"]), doc)
    assert chunks > 0
    for who in (team["outsider"], team["stranger"]):
        own = await save(client, who, "Own", "My own reactor log: argon checks every hour.")
        for response in (
            await client.get(f"/collections/{collection}", headers=who.headers),
            await client.patch(f"/collections/{collection}", json={"name": "Mine now"}, headers=who.headers),
            await client.delete(f"/collections/{collection}", headers=who.headers),
            await client.get(f"/documents/{doc}", headers=who.headers),
            await client.delete(f"/documents/{doc}", headers=who.headers),
            await move(client, who, doc, "personal"),
            await move(client, who, own, collection),
            await client.post("/save-document", json={"title": "x", "content": "Planted.", "collection_id": collection},
                              headers=who.headers),
            await upload(client, who, "planted.txt", "Planted file.", collection),
            await batch(client, who, [{"title": "x", "content": "Planted item."}], collection),
            await client.post("/collections", json={"name": "Mine", "organization_id": team["org"]},
                              headers=who.headers),
        ):
            assert_not_found(response)
            assert "Kestrel" not in response.text
        assert collection not in await collection_ids(client, who)
        assert await listed(client, who) == {own}
        assert await listed(client, who, collection) == set()
        assert not await finds_everywhere(client, who, TEAM_QUERY, doc)
        assert not await finds_everywhere(client, who, TEAM_QUERY, doc, collection)
        assert await summary_documents(client, who) == 1
    # Nothing changed for the organization.
    member = team["member"]
    assert await listed(client, member, collection) == {doc}
    assert await points_of(team["runtime"].vector_store, org_owner(team["org"]), doc) == chunks
    assert (await client.get(f"/collections/{collection}", headers=member.headers)).json()["name"] == "Lab notes"


async def test_a_member_reads_but_every_write_is_403(db_client, team):
    client, collection, doc, member = db_client, team["collection"], team["doc"], team["member"]
    listing = (await client.get("/collections", headers=member.headers)).json()["collections"]
    assert [c["id"] for c in listing] == ["personal", collection]
    assert listing[1] | {"created_at": None} == {
        "id": collection, "name": "Lab notes", "organization_id": team["org"], "role": "member",
        "can_write": False, "is_default": False, "document_count": 1, "created_at": None}
    assert (await client.get(f"/collections/{collection}", headers=member.headers)).status_code == 200
    detail = (await client.get(f"/documents/{doc}", headers=member.headers)).json()
    assert detail["collection_id"] == collection and detail["organization_id"] == team["org"]
    assert await listed(client, member) == {doc} and await listed(client, member, collection) == {doc}
    assert await finds_everywhere(client, member, TEAM_QUERY, doc)
    assert await finds_everywhere(client, member, TEAM_QUERY, doc, collection)
    assert not await finds_everywhere(client, member, TEAM_QUERY, doc, "personal")
    assert await summary_documents(client, member) == 1

    own = await save(client, member, "Own", "Members keep their own notes about argon too.")
    for response in (
        await client.post("/collections", json={"name": "Mine", "organization_id": team["org"]},
                          headers=member.headers),
        await client.patch(f"/collections/{collection}", json={"name": "Renamed"}, headers=member.headers),
        await client.delete(f"/collections/{collection}", headers=member.headers),
        await client.post("/save-document", json={"title": "x", "content": "Member text.",
                                                  "collection_id": collection}, headers=member.headers),
        await upload(client, member, "m.txt", "Member file.", collection),
        await batch(client, member, [{"title": "x", "content": "Member item."}], collection),
        await client.delete(f"/documents/{doc}", headers=member.headers),
        await move(client, member, doc, "personal"),
        await move(client, member, own, collection),
    ):
        assert_forbidden(response)
    assert await listed(client, member) == {doc, own}
    assert (await client.get(f"/documents/{own}", headers=member.headers)).json()["collection_id"] == "personal"
    assert (await client.get(f"/collections/{collection}", headers=member.headers)).json()["document_count"] == 1


@pytest.mark.parametrize("role", ["admin", "owner"])
async def test_admins_and_owners_write(db_client, team, role):
    client, org, writer = db_client, team["org"], team[role]
    made = await create_collection(client, writer, f"By the {role}", org)
    assert made["role"] == role and made["can_write"] and made["organization_id"] == org
    renamed = await client.patch(f"/collections/{made['id']}", json={"name": f"{role} shelf"},
                                 headers=writer.headers)
    assert renamed.status_code == 200, renamed.text
    saved = await save(client, writer, "Saved", f"{role} saved this about centrifuges.", made["id"])
    uploaded = await upload(client, writer, "u.txt", f"{role} uploaded this about pipettes.", made["id"])
    assert uploaded.status_code == 201, uploaded.text
    batched = await batch(client, writer, [{"title": "b", "content": f"{role} batched this about flasks."}],
                          made["id"])
    assert batched.status_code == 200 and batched.json()["created"] == 1, batched.text
    assert (await client.get(f"/collections/{made['id']}", headers=team["member"].headers)).json()[
        "document_count"] == 3
    # Documents of the organization: moved between its collections, out of it, deleted.
    assert (await move(client, writer, team["doc"], made["id"])).json()["collection_id"] == made["id"]
    out = await move(client, writer, saved, "personal")
    assert out.status_code == 200 and out.json()["organization_id"] is None, out.text
    assert_not_found(await client.get(f"/documents/{saved}", headers=team["member"].headers))
    ids = [uploaded.json()["documents"][0]["document_id"], batched.json()["items"][0]["document_id"], team["doc"]]
    for document in ids:
        assert (await client.delete(f"/documents/{document}", headers=writer.headers)).status_code == 200
    for collection in (made["id"], team["collection"]):
        assert (await client.delete(f"/collections/{collection}", headers=writer.headers)).status_code == 204
    assert await collection_ids(client, team["member"]) == ["personal"]


async def test_a_removed_member_loses_access_with_the_next_token(db_client, team, auth_headers):
    client, doc, collection = db_client, team["doc"], team["collection"]
    member = team["member"]
    assert await finds_everywhere(client, member, TEAM_QUERY, doc)
    removed = caller(auth_headers, user_id=member.id)  # the auth-service re-mints without the org
    assert_not_found(await client.get(f"/documents/{doc}", headers=removed.headers))
    assert_not_found(await client.get(f"/collections/{collection}", headers=removed.headers))
    assert await collection_ids(client, removed) == ["personal"]
    assert await listed(client, removed) == set() and await summary_documents(client, removed) == 0
    assert not await finds_everywhere(client, removed, TEAM_QUERY, doc)
    # The document saved by a former admin stays the organization's.
    former_admin = caller(auth_headers, user_id=team["admin"].id)
    assert_not_found(await client.delete(f"/documents/{doc}", headers=former_admin.headers))
    assert await listed(client, team["owner"]) == {doc}


async def test_a_user_of_two_organizations_sees_both_and_not_a_third(db_client, auth_headers):
    orgs = [new_org() for _ in range(3)]
    docs = {}
    for i, org in enumerate(orgs):
        boss = caller(auth_headers, {org: "owner"})
        collection = (await create_collection(db_client, boss, "Shared", org))["id"]
        docs[org] = await save(db_client, boss, f"Memo {i}", f"Memo {i}: the quokka census counts {i + 11} quokkas.",
                               collection)
    both = caller(auth_headers, {orgs[0]: "member", orgs[1]: "admin"})
    listing = (await db_client.get("/collections", headers=both.headers)).json()["collections"]
    assert [(c["organization_id"], c["role"]) for c in listing] == [
        (None, "owner"), *sorted([(orgs[0], "member"), (orgs[1], "admin")])]
    assert await listed(db_client, both) == {docs[orgs[0]], docs[orgs[1]]}
    for mode_hits in (await found(db_client, both, "quokka census")).values():
        assert mode_hits == {docs[orgs[0]], docs[orgs[1]]}
    assert_not_found(await db_client.get(f"/documents/{docs[orgs[2]]}", headers=both.headers))


async def test_forged_organization_claims_and_org_subjects_are_401(db_client, issuer, team):
    """A few shapes end to end (every malformed shape is in test_auth_orgs.py)."""
    bad_claims = [{team["org"]: "owner"}, [{"id": team["org"], "role": "superuser"}],
                  [{"id": team["org"], "role": "member"}, {"id": team["org"], "role": "owner"}]]
    tokens = [issuer.mint(team["member"].id, orgs=orgs) for orgs in bad_claims]
    # A subject in the organizations' key space would own the organization's documents.
    tokens += [issuer.mint(org_owner(team["org"])),
               issuer.mint(org_owner(team["org"]), orgs=[{"id": team["org"], "role": "owner"}])]
    for token in tokens:
        headers = {"Authorization": f"Bearer {token}"}
        for response in (await db_client.get("/collections", headers=headers),
                         await db_client.get(f"/documents/{team['doc']}", headers=headers),
                         await db_client.post("/search", json={"query": TEAM_QUERY}, headers=headers)):
            assert_json_error(response, 401)
            assert "Kestrel" not in response.text


async def test_moving_a_document_moves_its_visibility_and_its_points(db_client, team):
    client, admin, member, store = db_client, team["admin"], team["member"], team["runtime"].vector_store
    text = "The moth orchid greenhouse needs misting at dawn and at dusk."
    doc = await save(client, admin, "Orchids", text)
    org_key, admin_key = org_owner(team["org"]), admin.id
    chunks = await points_of(store, admin_key, doc)
    assert chunks > 0 and not await finds_everywhere(client, member, "moth orchid misting", doc)
    for target, key, others, visible in ((team["collection"], org_key, admin_key, True),
                                         ("personal", admin_key, org_key, False),
                                         (team["collection"], org_key, admin_key, True)):
        moved = await move(client, admin, doc, target)
        assert moved.status_code == 200, moved.text
        assert moved.json()["status"] == "ready" and moved.json()["collection_id"] == target
        assert await points_of(store, key, doc) == chunks and await points_of(store, others, doc) == 0
        assert await finds_everywhere(client, member, "moth orchid misting", doc) is visible
        assert await finds_everywhere(client, admin, "moth orchid misting", doc, target)
    # Moving where it already is changes nothing.
    again = await move(client, admin, doc, team["collection"])
    assert again.status_code == 200 and await points_of(store, org_key, doc) == chunks


async def test_deduplication_is_per_collection(db_client, team):
    client, admin, owner = db_client, team["admin"], team["owner"]
    text = "Gecko feet stick by van der Waals forces."
    personal = await save(client, admin, "Geckos", text)
    shared = await save(client, admin, "Geckos", text, team["collection"])
    assert shared != personal
    # Saved again into the same collection, by anyone who may write it: the first document.
    assert await save(client, owner, "Geckos again", text, team["collection"], expect=200) == shared
    assert await save(client, admin, "Geckos again", text, expect=200) == personal
    assert await listed(client, admin, team["collection"]) == {team["doc"], shared}
    # A move onto the same content in the target is refused, and changes nothing.
    refused = await move(client, admin, personal, team["collection"])
    assert assert_json_error(refused, 409)["code"] == "duplicate_in_collection"
    assert (await client.get(f"/documents/{personal}", headers=admin.headers)).json()["collection_id"] == "personal"


async def test_a_batch_never_lands_in_the_wrong_collection(db_client, team):
    """The collection of a batch is the `?collection_id=` query parameter; one given in the
    body instead (a JSON field or a form part) is refused as unexpected, never silently
    replaced by the default collection."""
    admin, target = team["admin"], team["collection"]
    in_body = await db_client.post("/documents/batch", headers=admin.headers, json={
        "collection_id": target, "items": [{"title": "b", "content": "Batched tapir sightings."}]})
    form = await db_client.post("/documents/batch", headers=admin.headers, data={"collection_id": target},
                                files={"files": ("t.txt", b"Uploaded tapir sightings.", "text/plain")})
    for response in (in_body, form):
        assert assert_json_error(response, 422)["message"], response.text
    assert await listed(db_client, admin, "personal") == set()
