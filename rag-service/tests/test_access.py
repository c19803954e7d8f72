"""The one access filter (storage/access.py), attacked directly on SQLite and Postgres.

A statement on documents, conversations or messages built without `scoped` is refused
before it reaches the database, whatever its form; a scoped one sees exactly the caller's
rows; an `Access` cannot be built without a user. The HTTP side (another user's ids are
404 on every route) is test_security_attacks.py.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, exists, func, literal, select, update

from rag_service.storage.access import (
    Access,
    UnscopedQuery,
    access_condition,
    access_filter,
    document_points,
    scoped,
    unscoped,
)
from rag_service.storage.models import Conversation, Document, Message
from rag_service.storage.filters import filter_spec
from rag_service.storage.vectors import ChunkFilter
from rag_service.core.roles import OrgRole

SRC = Path(__file__).resolve().parents[1] / "src" / "rag_service"


def new_access() -> Access:
    return Access(f"user-{uuid.uuid4().hex[:12]}")


async def seed(sessionmaker: Any, owner: Access) -> tuple[str, str]:
    """One document and one conversation with a message, owned by `owner`."""
    document = Document(user_id=owner.user_id, title="t", content="secret", content_hash=uuid.uuid4().hex,
                        content_chars=6, status="ready")
    conversation = Conversation(user_id=owner.user_id, title="c")
    async with sessionmaker() as session:
        session.add_all([document, conversation])
        await session.flush()
        session.add(Message(conversation_id=conversation.id, user_id=owner.user_id, position=0, role="user",
                            content="secret question"))
        await session.commit()
    return document.id, conversation.id


async def table_sizes(sessionmaker: Any) -> tuple[int, ...]:
    async with sessionmaker() as session:
        return tuple([await session.scalar(unscoped(select(func.count()).select_from(model), "test: table sizes"))
                      for model in (Document, Conversation, Message)])


def unscoped_statements(document_id: str, conversation_id: str) -> dict[str, Any]:
    """Every shape a forgotten filter can take: reads, counts, writes, deletes, by id or
    not, the owned table only inside a subquery or a join."""
    return {
        "select by id": select(Document).where(Document.id == document_id),
        "select columns": select(Document.title, Document.content),
        "count": select(func.count()).select_from(Conversation),
        "aggregate": select(func.sum(Document.content_chars)),
        "subquery only": select(literal(1)).where(exists(select(Message.id))),
        "join": select(Conversation.title).join(Message, Message.conversation_id == Conversation.id),
        "update": update(Document).where(Document.id == document_id).values(title="stolen"),
        "delete": delete(Message).where(Message.conversation_id == conversation_id),
        "delete all": delete(Conversation),
    }


async def test_a_statement_without_a_scope_is_refused_before_it_runs(db_sessionmaker: Any) -> None:
    victim = new_access()
    document_id, conversation_id = await seed(db_sessionmaker, victim)
    before = await table_sizes(db_sessionmaker)

    for name, statement in unscoped_statements(document_id, conversation_id).items():
        async with db_sessionmaker() as session:
            with pytest.raises(UnscopedQuery):
                await session.execute(statement)
            await session.commit()
        assert await table_sizes(db_sessionmaker) == before, name
    async with db_sessionmaker() as session:
        with pytest.raises(UnscopedQuery):  # the identity lookup is a SELECT too
            await session.get(Document, document_id)
    async with db_sessionmaker() as session:
        document = (await session.scalars(scoped(select(Document), victim, Document))).one()
    assert document.title == "t"  # the update above never ran


async def test_a_scoped_statement_sees_only_the_callers_rows(db_sessionmaker: Any) -> None:
    alice, bob = new_access(), new_access()
    alices_document, alices_conversation = await seed(db_sessionmaker, alice)
    bobs_document, bobs_conversation = await seed(db_sessionmaker, bob)

    async with db_sessionmaker() as session:
        documents = (await session.scalars(scoped(select(Document.id), bob, Document))).all()
        conversations = (await session.scalars(scoped(select(Conversation.id), bob, Conversation))).all()
        messages = (await session.scalars(scoped(select(Message.conversation_id), bob, Message))).all()
        by_alices_id = (await session.scalars(
            scoped(select(Document).where(Document.id == alices_document), bob, Document))).all()
        changed = await session.execute(scoped(
            update(Conversation).where(Conversation.id == alices_conversation).values(title="stolen"),
            bob, Conversation))
        removed = await session.execute(scoped(
            delete(Message).where(Message.conversation_id == alices_conversation), bob, Message))
        await session.commit()

    assert documents == [bobs_document]
    assert conversations == [bobs_conversation]
    assert messages == [bobs_conversation]
    assert by_alices_id == []
    assert changed.rowcount == 0 and removed.rowcount == 0
    async with db_sessionmaker() as session:
        title = await session.scalar(scoped(select(Conversation.title), alice, Conversation))
        count = await session.scalar(scoped(select(func.count(Message.id)), alice, Message))
    assert (title, count) == ("c", 1)


async def test_a_message_is_visible_through_its_conversation_not_its_own_user_column(db_sessionmaker: Any) -> None:
    # A message row claiming Bob in Alice's conversation (no code path writes one) is
    # still Alice's: a message is seen through its conversation's owner.
    alice, bob = new_access(), new_access()
    _, alices_conversation = await seed(db_sessionmaker, alice)
    async with db_sessionmaker() as session:
        session.add(Message(conversation_id=alices_conversation, user_id=bob.user_id, position=1, role="assistant",
                            content="planted"))
        await session.commit()
        bobs = (await session.scalars(scoped(select(Message.content), bob, Message))).all()
        alices = (await session.scalars(scoped(select(Message.content), alice, Message))).all()
    assert bobs == []
    assert sorted(alices) == ["planted", "secret question"]


async def test_relationship_and_attribute_loads_of_a_scoped_object_are_allowed(db_sessionmaker: Any) -> None:
    owner = new_access()
    _, conversation_id = await seed(db_sessionmaker, owner)
    async with db_sessionmaker() as session:
        conversation = (await session.scalars(
            scoped(select(Conversation).where(Conversation.id == conversation_id), owner, Conversation))).one()
        messages = await session.run_sync(lambda _: [m.content for m in conversation.messages])
        session.expire(conversation, ["title"])
        await session.refresh(conversation, ["title"])
    assert messages == ["secret question"] and conversation.title == "c"


def test_an_access_scope_needs_a_user_and_only_an_access_scopes() -> None:
    for bad in ("", "   ", None, 42):
        with pytest.raises(ValueError, match="user id"):
            Access(bad)  # type: ignore[arg-type]
    for not_an_access in ("alice", None, {"user_id": "alice"}):
        with pytest.raises(TypeError, match="Access"):
            access_filter(not_an_access)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="Access"):
            access_condition(not_an_access, Document)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="Access"):
            scoped(select(Document), not_an_access, Document)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="no access rule"):
        access_condition(Access("alice"), ChunkFilter)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="reason"):
        unscoped(select(Document), " ")


def test_the_vector_filter_always_pins_the_owners_the_caller_may_read() -> None:
    alice = Access("alice")
    assert access_filter(alice) == ChunkFilter(owners=("alice",))
    narrowed = access_filter(alice, document_ids=["d1"], metadata={"lang": ["en"]})
    assert narrowed.owners == ("alice",) and narrowed.access_only() == ChunkFilter(owners=("alice",))
    member = Access("bob", {"o2": OrgRole.MEMBER, "o1": OrgRole.ADMIN})
    assert access_filter(member).owners == ("bob", "org:o1", "org:o2")
    assert member.writable_owners == ("bob", "org:o1")
    # Narrowing never changes the owners (they are the keyword statistics' corpus too).
    assert access_filter(member, collection_id="personal").owners == ("bob", "org:o1", "org:o2")
    assert access_filter(member, collection_id="c1").owners == ("bob", "org:o1", "org:o2")
    bookkeeping = document_points("d1", below=3)
    assert (bookkeeping.owners, bookkeeping.document_ids, bookkeeping.generation_below) == ((), ("d1",), 3)


def test_an_ownerless_vector_filter_selects_one_document_or_is_refused() -> None:
    for unscoped_filter in (ChunkFilter(owners=()), ChunkFilter(owners=(), document_ids=("d1", "d2")),
                            ChunkFilter(owners=("",)), ChunkFilter(owners=("alice", ""))):
        with pytest.raises(ValueError):
            filter_spec(unscoped_filter)
    with pytest.raises(ValueError):
        document_points("")


def test_a_user_id_in_the_organizations_key_space_is_refused() -> None:
    with pytest.raises(ValueError, match="organization"):
        Access("org:o1")


def test_no_raw_sql_text_touches_the_owned_tables() -> None:
    # Raw SQL would slip past the session's check: the service never writes any on these tables.
    owned = re.compile(r"\b(documents|conversations|messages)\b", re.IGNORECASE)
    offenders = []
    for path in SRC.rglob("*.py"):
        if "migrations" in path.parts:
            continue
        for call in re.finditer(r"\btext\(\s*f?([\"'])(.*?)\1", path.read_text(), re.DOTALL):
            if owned.search(call.group(2)):
                offenders.append(f"{path.relative_to(SRC)}: {call.group(2)[:80]}")
    assert offenders == []

