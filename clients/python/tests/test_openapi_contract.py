"""The client's routes and models held against the rag-service's OpenAPI document, built
in-process from its app (`rag_service.main.create_app`): every call names a route that
exists, sends a body and query parameters that route accepts, and every field of the model
it reads exists in the route's response schema, with a type the model can hold, required
whenever the model requires it, and nullable only where the model allows None.

The models stay hand-written (rather than generated from the document) because they are
shaped for users: `SavedDocument.created` comes from the status code, a batch item's error is
flattened into `error_code` / `error_message` / `error_status`, and streamed chat events and
API keys (auth-service) are not in this document at all. This test is what keeps them true.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from rag_client import calls
from rag_client.models import (
    BatchItemResult,
    BatchResult,
    BatchText,
    ChatAnswer,
    Collection,
    Document,
    DocumentPage,
    IngestionSummary,
    OwnerUsage,
    SavedDocument,
    SearchHit,
    Source,
    UploadedDocument,
)


@pytest.fixture(scope="module")
def openapi() -> dict[str, Any]:
    from rag_service.main import create_app

    return create_app().openapi()


# Every rag-service call the client makes, with arguments that fill every optional part.
CALLS: dict[str, calls.Call] = {
    "save": calls.save("Tar", "tar archives files.", {"topic": "unix"}, collection_id="personal"),
    "upload": calls.upload([("tar.md", b"tar archives files.")], title="Tar", metadata={"topic": "unix"},
                           collection_id="personal"),
    "batch (json)": calls.batch([BatchText("Tar", "tar archives files.", {"topic": "unix"})],
                                collection_id="personal"),
    "list_documents": calls.list_documents(2, 50, collection_id="personal"),
    "get_document": calls.get_document("doc-1"),
    "delete_document": calls.delete_document("doc-1"),
    "move_document": calls.move_document("doc-1", "personal"),
    "summary": calls.summary(),
    "list_collections": calls.list_collections(),
    "create_collection": calls.create_collection("Manuals", "org-1"),
    "get_collection": calls.get_collection("personal"),
    "rename_collection": calls.rename_collection("col-1", "Handbooks"),
    "delete_collection": calls.delete_collection("col-1"),
    "search": calls.search("archives", top_k=3, mode="keyword", filters={"metadata": {"topic": "unix"}}, min_score=0.1,
                           collection_id="personal"),
    "chat": calls.chat("What does tar do?", conversation_id="conv-1", top_k=3, filters={"metadata": {"topic": "unix"}},
                       collection_id="personal"),
    "chat_stream": calls.chat_stream("What does tar do?", conversation_id="conv-1", top_k=3, collection_id="personal"),
    "history": calls.history(2, 10),
    "conversation": calls.conversation("conv-1"),
    "delete_conversation": calls.delete_conversation("conv-1"),
}

# (call, model, where the model sits in the answer: "" the body, "documents[]" its items).
MODELS: list[tuple[str, type, str]] = [
    ("save", SavedDocument, ""),
    ("upload", UploadedDocument, "documents[]"),
    ("batch (json)", BatchResult, ""),
    ("batch (json)", BatchItemResult, "items[]"),
    ("list_documents", DocumentPage, ""),
    ("list_documents", Document, "documents[]"),
    ("get_document", Document, ""),
    ("move_document", Document, ""),
    ("summary", IngestionSummary, ""),
    ("summary", OwnerUsage, "owners[]"),
    ("list_collections", Collection, "collections[]"),
    ("create_collection", Collection, ""),
    ("get_collection", Collection, ""),
    ("rename_collection", Collection, ""),
    ("search", SearchHit, "results[]"),
    ("chat", ChatAnswer, ""),
    ("chat", Source, "sources[]"),
]

# Fields not read from a property of the same name: where they come from instead (None: not
# from the body).
FROM_ELSEWHERE: dict[tuple[type, str], str | None] = {
    (SavedDocument, "created"): None,  # the status code: 201 created, 200 already stored
    (BatchItemResult, "error_code"): "error.code",
    (BatchItemResult, "error_message"): "error.message",
    (BatchItemResult, "error_status"): "error.status",
}
# Optional fields an answer does not carry, by call.
ABSENT: dict[tuple[str, type], set[str]] = {
    ("list_documents", Document): {"content"},  # only GET /documents/{id} carries the text
}

JSON_TYPES: dict[type, set[str]] = {str: {"string"}, int: {"integer"}, float: {"number", "integer"},
                                    bool: {"boolean"}, dict: {"object"}, list: {"array"}}


def operation(openapi: dict[str, Any], call: calls.Call) -> dict[str, Any]:
    for template, operations in openapi["paths"].items():
        pattern = "^" + re.sub(r"\{[^}]+\}", "[^/]+", template) + "$"
        if re.match(pattern, call.path) and call.method.lower() in operations:
            return operations[call.method.lower()]
    raise AssertionError(f"{call.method} {call.path}: no such route in the rag-service")


def resolve(openapi: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = openapi["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def variants(openapi: dict[str, Any], schema: dict[str, Any]) -> tuple[list[dict[str, Any]], bool]:
    """The non-null shapes a value may take, and whether it may be null."""
    options = [resolve(openapi, s) for s in schema.get("anyOf", [schema])]
    nullable = any(o.get("type") == "null" for o in options)
    return [o for o in options if o.get("type") != "null"], nullable


def success_schema(openapi: dict[str, Any], call: calls.Call) -> dict[str, Any]:
    responses = operation(openapi, call)["responses"]
    [status] = sorted(s for s in responses if s.startswith("2"))[:1]
    return resolve(openapi, responses[status]["content"]["application/json"]["schema"])


def locate(openapi: dict[str, Any], schema: dict[str, Any], where: str) -> dict[str, Any]:
    for part in filter(None, where.split(".")):
        name = part.removesuffix("[]")
        schema = resolve(openapi, schema["properties"][name])
        if part.endswith("[]"):
            schema = resolve(openapi, schema["items"])
    return schema


def property_of(openapi: dict[str, Any], schema: dict[str, Any], path: str) -> tuple[dict[str, Any] | None, bool]:
    """The schema at a dotted property path and whether every step of it is required."""
    required = True
    for name in path.split("."):
        [shape], _ = variants(openapi, schema) if "anyOf" in schema else ([resolve(openapi, schema)], False)
        if name not in shape.get("properties", {}):
            return None, False
        required = required and name in shape.get("required", [])
        schema = shape["properties"][name]
    return schema, required


def mismatches(openapi: dict[str, Any], hint: Any, schema: dict[str, Any], field: str) -> list[str]:
    """Why a value of `schema` may not fit the annotation `hint` (empty: it always fits)."""
    if hint is Any:
        return []
    args = typing.get_args(hint)
    allows_none = typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args
    if allows_none:
        [hint] = [a for a in args if a is not type(None)]
    shapes, nullable = variants(openapi, schema)
    problems = [f"{field}: the service may send null, the client's type does not allow None"] \
        if nullable and not allows_none else []
    origin = typing.get_origin(hint) or hint
    accepted = {"object"} if dataclasses.is_dataclass(origin) else JSON_TYPES.get(origin, set())
    for shape in shapes:
        kind = shape.get("type")
        if kind not in accepted:
            problems.append(f"{field}: the service sends {kind or shape}, the client expects {hint}")
        elif kind == "array" and typing.get_args(hint) and "items" in shape:
            problems += mismatches(openapi, typing.get_args(hint)[0], shape["items"], f"{field}[]")
    return problems


@pytest.mark.parametrize("name", sorted(CALLS))
def test_every_call_names_a_route_and_sends_what_it_accepts(openapi: dict[str, Any], name: str) -> None:
    call = CALLS[name]
    spec = operation(openapi, call)
    accepted = {p["name"] for p in spec.get("parameters", []) if p["in"] == "query"}
    assert set(call.params or {}) <= accepted, f"{name}: query parameters the route does not take"
    if call.json is not None:
        schema = spec["requestBody"]["content"]["application/json"]["schema"]
        validator = Draft202012Validator({**schema, "components": openapi["components"]})
        assert [e.message for e in validator.iter_errors(call.json)] == [], f"{name}: body refused"
    if call.files is not None or call.data is not None:
        form = resolve(openapi, spec["requestBody"]["content"]["multipart/form-data"]["schema"])
        sent = {part for part, _ in call.files or []} | set(call.data or {})
        assert sent <= set(form["properties"]), f"{name}: form fields the route does not take"


def model_problems(openapi: dict[str, Any], model: type, schema: dict[str, Any],
                   absent: set[str] | None = None) -> list[str]:
    """Why `model` may fail to read an answer of `schema` (empty: it always reads it).
    `absent`: optional fields this answer does not carry."""
    hints = typing.get_type_hints(model)
    problems: list[str] = []
    for field in dataclasses.fields(model):
        path = FROM_ELSEWHERE.get((model, field.name), field.name)
        if path is None:
            continue
        if field.name in (absent or set()):
            assert field.default is None, f"{field.name} is absent from this answer: the model needs a None default"
            continue
        found, required = property_of(openapi, schema, path)
        if found is None:
            problems.append(f"{field.name}: not in the answer ({path})")
            continue
        has_default = field.default is not dataclasses.MISSING or field.default_factory is not dataclasses.MISSING
        if not has_default and not required:
            problems.append(f"{field.name}: the client requires it, the service may leave it out")
        problems += mismatches(openapi, hints[field.name], found, field.name)
    return problems


@pytest.mark.parametrize(("name", "model", "where"), MODELS,
                         ids=[f"{model.__name__}@{name}" for name, model, _ in MODELS])
def test_every_model_field_is_in_the_answer_with_a_compatible_type(openapi: dict[str, Any], name: str,
                                                                   model: type, where: str) -> None:
    schema = locate(openapi, success_schema(openapi, CALLS[name]), where)
    absent = ABSENT.get((name, model), set())
    assert model_problems(openapi, model, schema, absent) == [], f"{model.__name__} against {name}'s answer"


@dataclasses.dataclass(frozen=True)
class DriftedDocument:
    identifier: str
    chunk_count: str
    source_name: str
    error: str | None


def test_the_contract_check_catches_a_drifted_model(openapi: dict[str, Any]) -> None:
    """The check itself can fail: a renamed field, a retyped one, a null it cannot hold, and
    a field the client requires that the service may leave out."""
    schema = success_schema(openapi, CALLS["get_document"])
    assert model_problems(openapi, DriftedDocument, schema) == [
        "identifier: not in the answer (identifier)",
        "chunk_count: the service sends integer, the client expects <class 'str'>",
        "source_name: the service may send null, the client's type does not allow None",
        "error: the client requires it, the service may leave it out",
    ]
