"""A `ChunkFilter` as target-neutral conditions, and their SQL form for the pgvector adapter.

`filter_spec` is the one place a `ChunkFilter` becomes conditions on payload fields; each
vector store then translates those few condition kinds to its own types, and nothing else:
`qdrant_edge.edge_filter` (qdrant-edge-py), `qdrant_server.server_filter` (qdrant-client
`models`) and `sql_filter` below (SQL over the pgvector table's columns and jsonb metadata).

The behaviours every target keeps (tests/test_vector_store_contract.py checks them on all three):
- the access condition (the owners the caller may read) is always the first condition; only
  the bookkeeping filter of one document's points (`access.document_points`) has none, and
  starts with that document's id instead;
- `collection_id` DEFAULT_COLLECTION matches points without a collection (`Missing`);
- metadata values match by JSON type: strings never equal numbers, booleans never equal 0/1,
  floats match numerically (a closed range on the value), an array field matches when it
  holds an accepted value; a field with no accepted values matches nothing (a filter only
  narrows);
- `generation_below` excludes points at or above that generation (`must_not`), so points
  written before generations existed (no generation field) still match.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from rag_service.storage.vectors import (
    COLLECTION_ID_KEY,
    DEFAULT_COLLECTION,
    DOCUMENT_ID_KEY,
    GENERATION_KEY,
    METADATA_KEY,
    OWNER_KEY,
    ChunkFilter,
    metadata_field,
)


@dataclass(frozen=True)
class Equals:
    """The field equals `value` (a bool matches only a JSON boolean)."""

    key: str
    value: str | int | bool


@dataclass(frozen=True)
class OneOf:
    """The field equals one of `values` (all strings or all integers); none: matches nothing."""

    key: str
    values: tuple[str, ...] | tuple[int, ...]


@dataclass(frozen=True)
class Between:
    """The field is a number within the given bounds (inclusive)."""

    key: str
    gte: float | None = None
    lte: float | None = None


@dataclass(frozen=True)
class Missing:
    """The field is absent (or null, or an empty list)."""

    key: str


@dataclass(frozen=True)
class AnyOf:
    """At least one of `conditions` holds."""

    conditions: tuple[Condition, ...]


Condition = Equals | OneOf | Between | Missing | AnyOf


@dataclass(frozen=True)
class FilterSpec:
    """Every `must` condition holds and no `must_not` condition does."""

    must: tuple[Condition, ...]
    must_not: tuple[Condition, ...] = ()


def filter_spec(where: ChunkFilter) -> FilterSpec:
    """`where` as conditions; refuses (a real check, not an assert) a filter without owners,
    unless it selects exactly one document by id (`access.document_points`)."""
    owners = where.owners
    if not isinstance(owners, tuple) or any(not isinstance(o, str) or not o for o in owners):
        raise ValueError("a vector filter's owners must be non-empty strings")
    must: list[Condition] = []
    if owners:
        # One owner (a caller in no organization) as Equals: the tenant index's fast path.
        must.append(Equals(OWNER_KEY, owners[0]) if len(owners) == 1 else OneOf(OWNER_KEY, owners))
    elif len(where.document_ids) != 1:
        raise ValueError("a vector filter must be scoped to owners (or to exactly one document)")
    if where.collection_id == DEFAULT_COLLECTION:
        must.append(Missing(COLLECTION_ID_KEY))
    elif where.collection_id is not None:
        must.append(Equals(COLLECTION_ID_KEY, where.collection_id))
    if where.document_ids:
        must.append(OneOf(DOCUMENT_ID_KEY, tuple(where.document_ids)))
    for key, values in where.metadata:
        must.append(_metadata_condition(metadata_field(key), values))
    if where.generation is not None:
        must.append(Equals(GENERATION_KEY, where.generation))
    must_not: list[Condition] = []
    if where.generation_below is not None:
        # must_not(>= n) also matches points that have no generation (written before it existed).
        must_not.append(Between(GENERATION_KEY, gte=where.generation_below))
    return FilterSpec(must=tuple(must), must_not=tuple(must_not))


def _metadata_condition(path: str, values: tuple[str | int | float | bool, ...]) -> Condition:
    """Match any of `values` at `path`, each by its JSON type."""
    strings = tuple(v for v in values if isinstance(v, str))
    integers = tuple(v for v in values if isinstance(v, int) and not isinstance(v, bool))
    conditions: list[Condition] = []
    if strings or not values:
        conditions.append(OneOf(path, strings))  # no values at all: an empty OneOf, matching nothing
    if integers:
        conditions.append(OneOf(path, integers))
    for value in values:
        if isinstance(value, bool):
            conditions.append(Equals(path, value))
        elif isinstance(value, float):
            conditions.append(Between(path, gte=value, lte=value))
    return conditions[0] if len(conditions) == 1 else AnyOf(tuple(conditions))


# --- SQL (the pgvector adapter) -----------------------------------------------------------

# Payload keys stored as columns of the pgvector table; metadata lives in a jsonb column.
SQL_COLUMNS = {OWNER_KEY: "user_id", DOCUMENT_ID_KEY: "document_id", GENERATION_KEY: "generation",
               COLLECTION_ID_KEY: "collection_id"}


def sql_filter(where: ChunkFilter) -> tuple[str, dict[str, Any]]:
    """`ChunkFilter` -> a SQL condition and its psycopg parameters (pgvector adapter).

    The condition reads the columns `user_id` (the owner), `collection_id`, `document_id`,
    `generation` and `metadata` (jsonb) and starts with the owners (`f_owners`, also what
    the keyword query's IDF sums over). Parameter names start with `f_`. Metadata
    conditions are jsonpath predicates: lax mode looks inside arrays, and jsonpath compares
    only values of the same JSON type, as Qdrant does.
    """
    spec = filter_spec(where)
    # pgvector's keyword query computes IDF over the chunks of these owners (its corpus CTE).
    params: dict[str, Any] = {"f_owners": list(where.owners)}
    clauses = [_sql(condition, params) for condition in spec.must]
    clauses += [f"NOT ({_sql(condition, params)})" for condition in spec.must_not]
    return " AND ".join(clauses), params


def _sql(condition: Condition, params: dict[str, Any]) -> str:
    if isinstance(condition, AnyOf):
        return "(" + " OR ".join(_sql(c, params) for c in condition.conditions) + ")"
    if isinstance(condition, OneOf) and not condition.values:
        return "FALSE"
    if isinstance(condition, Missing):
        column = SQL_COLUMNS.get(condition.key)
        if column is None:
            raise ValueError(f"no column for {condition.key[:80]!r}")
        return f"{column} IS NULL"

    def bind(value: Any) -> str:
        name = f"f_{len(params)}"
        params[name] = value
        return f"%({name})s"

    column = SQL_COLUMNS.get(condition.key)
    if column is not None:
        if isinstance(condition, Equals):
            return f"{column} = {bind(condition.value)}"
        if isinstance(condition, OneOf):
            return f"{column} = ANY({bind(list(condition.values))})"
        return " AND ".join(f"{column} {operator} {bind(bound)}" for operator, bound in _bounds(condition))
    # A metadata field: a jsonpath predicate, its values passed as jsonpath variables.
    if isinstance(condition, Equals):
        variables = {"v0": condition.value}
        test = "@ == $v0"
    elif isinstance(condition, OneOf):
        variables = {f"v{i}": value for i, value in enumerate(condition.values)}
        test = " || ".join(f"@ == ${variable}" for variable in variables)
    else:
        bounds = _bounds(condition)
        variables = {f"v{i}": bound for i, (_, bound) in enumerate(bounds)}
        test = " && ".join(f"@ {operator} $v{i}" for i, (operator, _) in enumerate(bounds))
    path = bind(f"{_jsonpath(condition.key)} ? ({test})")
    return f"jsonb_path_exists(metadata, {path}::jsonpath, {bind(json.dumps(variables))}::jsonb)"


def _bounds(condition: Between) -> list[tuple[str, float]]:
    bounds = [(operator, bound) for operator, bound in ((">=", condition.gte), ("<=", condition.lte))
              if bound is not None]
    if not bounds:
        raise ValueError(f"a range on {condition.key[:80]!r} without bounds")
    return bounds


def _jsonpath(key: str) -> str:
    """"metadata.a.b" -> '$."a"."b"' (each part checked to be a plain name, then quoted)."""
    prefix, _, field = key.partition(".")
    if prefix != METADATA_KEY:
        raise ValueError(f"not a metadata field: {key[:80]!r}")
    metadata_field(field)  # only plain names reach the jsonpath (BadRequest otherwise)
    return "$" + "".join(f'."{part}"' for part in field.split("."))
