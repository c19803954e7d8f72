"""The access token's `orgs` claim: the caller's organization memberships and roles.

Shape (shared-schemas/jwt-claims.schema.json): absent, or a list of at most `MAX_ORGS`
objects `{"id": <organization id>, "role": "owner" | "admin" | "member"}`, each id once. The
auth-service reads memberships when it mints a token, so the claim is as old as the token
(at most its lifetime). A claim of any other shape is refused as a whole (401): a token that
cannot be read exactly grants nothing, rather than whatever part of it looked valid.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from rag_service.core.roles import NO_MEMBERSHIPS, Memberships, OrgRole
from rag_service.errors import Unauthorized

# The auth-service refuses to let a user join more (MAX_ORGS_PER_USER) and never mints more.
MAX_ORGS = 50
# Better Auth's ids are 32 characters (36 as UUIDs). The bound keeps the largest valid claim
# (50 entries, ~4.5 KB) well under MAX_TOKEN_CHARS.
MAX_ORG_ID_CHARS = 64

_ROLES = {role.value: role for role in OrgRole}
_ENTRY_KEYS = frozenset({"id", "role"})


def _refuse(problem: str) -> Unauthorized:
    return Unauthorized(f"invalid access token: {problem}")


def parse_orgs(claims: Mapping[str, Any]) -> Memberships:
    """The memberships in verified `claims` (none when the claim is absent), or Unauthorized."""
    if "orgs" not in claims:
        return NO_MEMBERSHIPS
    entries = claims["orgs"]
    if not isinstance(entries, list):
        raise _refuse("orgs must be a list")
    if len(entries) > MAX_ORGS:
        raise _refuse(f"more than {MAX_ORGS} organizations in orgs")
    memberships: dict[str, OrgRole] = {}
    for entry in entries:
        if not isinstance(entry, dict) or entry.keys() != _ENTRY_KEYS:
            raise _refuse("each orgs entry must be exactly {id, role}")
        org_id, role = entry["id"], entry["role"]
        if not isinstance(org_id, str) or not org_id.strip() or len(org_id) > MAX_ORG_ID_CHARS:
            raise _refuse(f"an organization id must be 1 to {MAX_ORG_ID_CHARS} characters")
        if not isinstance(role, str) or role not in _ROLES:
            raise _refuse(f"an organization role must be one of {', '.join(_ROLES)}")
        if org_id in memberships:
            raise _refuse("an organization appears twice in orgs")
        memberships[org_id] = _ROLES[role]
    return MappingProxyType(memberships)
