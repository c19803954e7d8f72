"""docker-compose.yml is checked without a Docker engine: it parses, pins its images, and every
environment variable it sets is one the configured service actually reads."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _env(service: str) -> set[str]:
    return set(COMPOSE["services"][service]["environment"])


def test_images_are_pinned() -> None:
    for name, service in COMPOSE["services"].items():
        if "image" in service:
            tag = service["image"].rsplit(":", 1)
            assert len(tag) == 2 and tag[1] not in ("latest", ""), f"{name} image is not pinned"
        assert "healthcheck" in service, f"{name} has no health check"


def test_rag_service_env_vars_exist_in_its_settings() -> None:
    from rag_service.config import Settings

    known = {name.upper() for name in Settings.model_fields}
    for service in ("rag-service", "rag-service-pgvector"):
        unknown = _env(service) - known
        assert not unknown, f"{service}: rag-service settings do not read {unknown}"


def test_auth_service_env_vars_exist_in_its_config() -> None:
    sources = "\n".join(p.read_text() for p in (ROOT / "auth-service" / "src").rglob("*.ts"))
    read = set(re.findall(r"\b([A-Z][A-Z0-9_]{2,})\b", sources))
    for service in ("auth-service", "auth-service-pgvector"):
        unknown = _env(service) - read
        assert not unknown, f"{service}: auth-service does not read {unknown}"


def test_env_example_lists_every_compose_variable() -> None:
    example = (ROOT / ".env.example").read_text()
    listed = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", example, flags=re.M))
    for service in ("auth-service", "rag-service", "auth-service-pgvector", "rag-service-pgvector"):
        missing = _env(service) - listed
        assert not missing, f".env.example lacks {missing} ({service})"
