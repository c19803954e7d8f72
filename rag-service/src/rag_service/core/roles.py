"""Organization roles: what the token's `orgs` claim grants (auth/orgs.py parses it) and
what the access scope decides by (storage/access.py), so neither imports the other.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType


class OrgRole(StrEnum):
    """A member's role in one organization. What each may do is the caller's to decide."""

    OWNER = "owner"
    ADMIN = "admin"
    MEMBER = "member"


# Organization id -> the caller's role there; read-only.
Memberships = Mapping[str, OrgRole]
NO_MEMBERSHIPS: Memberships = MappingProxyType({})
