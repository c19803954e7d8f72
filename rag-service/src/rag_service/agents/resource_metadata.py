"""OAuth 2.0 Protected Resource Metadata (RFC 9728) for the MCP server, as the MCP
authorization spec asks: an MCP client that gets a 401 from /mcp reads the
`resource_metadata` URL in `WWW-Authenticate`, fetches this document and learns which
authorization server issues tokens for us (the auth-service, `AUTH_ISSUER`) and which scopes
exist (`read`, `write`).

Served at `/.well-known/oauth-protected-resource` and at its path-inserted form for the /mcp
resource (`/.well-known/oauth-protected-resource/mcp`, RFC 9728 §3.1), unauthenticated.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from mcp.shared.auth import ProtectedResourceMetadata
from starlette.datastructures import URL
from starlette.types import Scope

from rag_service.auth.oauth_resources import MCP_PATH
from rag_service.auth.tokens import SCOPES
from rag_service.config import Settings
from rag_service.deps import SettingsDep

METADATA_PATH = "/.well-known/oauth-protected-resource"

router = APIRouter(tags=["agents"])


def base_url(settings: Settings, scope: Scope) -> str:
    if settings.public_url:
        return settings.public_url.rstrip("/")
    url = URL(scope=scope)
    return f"{url.scheme}://{url.netloc}"


def metadata_url(settings: Settings, scope: Scope) -> str:
    return base_url(settings, scope) + METADATA_PATH + MCP_PATH


def www_authenticate(settings: Settings, scope: Scope, error_description: str | None = None) -> str:
    """The 401's challenge (RFC 6750 §3 with RFC 9728 §5.1's `resource_metadata`). Without a
    credential in the request there is no error code (RFC 6750 §3.1)."""
    parts = ['Bearer realm="rag-service"']
    if error_description is not None:
        parts.append('error="invalid_token"')
        parts.append('error_description="' + error_description.replace('"', "'").replace("\\", "/") + '"')
    parts.append(f'resource_metadata="{metadata_url(settings, scope)}"')
    return ", ".join(parts)


def metadata(settings: Settings, scope: Scope) -> dict[str, Any]:
    document = ProtectedResourceMetadata(
        resource=base_url(settings, scope) + MCP_PATH,
        authorization_servers=[settings.auth_issuer],
        scopes_supported=list(SCOPES),
        bearer_methods_supported=["header"],
        resource_name="rag-service MCP server",
    )
    return document.model_dump(mode="json", exclude_none=True)


@router.get(METADATA_PATH, include_in_schema=False)
@router.get(METADATA_PATH + MCP_PATH, include_in_schema=False)
async def protected_resource_metadata(request: Request, settings: SettingsDep) -> dict[str, Any]:
    return metadata(settings, request.scope)
