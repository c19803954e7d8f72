"""`GET /me`: who the bearer token says the caller is (handy for clients and smoke tests)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from rag_service.core.roles import OrgRole
from rag_service.deps import UserDep

router = APIRouter(tags=["auth"])


class OrgMembership(BaseModel):
    id: str
    role: OrgRole


class MeResponse(BaseModel):
    user_id: str
    # Kept for the seed contract; access tokens no longer carry an email (the auth-service's
    # GET /auth/me has the profile), so this is null unless a foreign issuer adds one.
    email: str | None = None
    expires_at: int
    # The organizations in the token (its `orgs` claim), as this service read them.
    orgs: list[OrgMembership] = []


@router.get("/me", response_model=MeResponse)
async def me(user: UserDep) -> dict[str, Any]:
    email = user.claims.get("email")
    return {
        "user_id": user.id,
        "email": email if isinstance(email, str) else None,
        "expires_at": int(user.claims["exp"]),
        "orgs": [{"id": org_id, "role": role} for org_id, role in user.orgs.items()],
    }
