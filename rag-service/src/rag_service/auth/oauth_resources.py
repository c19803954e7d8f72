"""This service as an OAuth protected resource: the identifiers (RFC 8707) that OAuth access
tokens from the auth-service are issued for. An MCP client asks for a token for the `resource`
its protected-resource metadata names (agents/resource_metadata.py: PUBLIC_URL + /mcp); a REST
client may ask for PUBLIC_URL itself. The auth-service issues tokens only for the identifiers in
its OAUTH_RESOURCES, which must list these two.

Without PUBLIC_URL there is no identifier: the metadata then names the resource after each
request's Host header, which a token's audience cannot be checked against, so OAuth access
tokens are refused (session and API-key tokens, audience AUTH_AUDIENCE, keep working).
"""

from __future__ import annotations

from rag_service.config import Settings

MCP_PATH = "/mcp"


def resource_identifiers(settings: Settings) -> list[str]:
    if not settings.public_url:
        return []
    base = settings.public_url.rstrip("/")
    return [base, base + MCP_PATH]
