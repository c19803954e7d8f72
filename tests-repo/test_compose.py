"""docker-compose.yml is checked without a Docker engine: it parses, pins its images, and every
environment variable it sets is one the configured service actually reads."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
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


# --- least privilege: one database and one role per service ---------------------------

INIT_MOUNT_DIR = "/docker-entrypoint-initdb.d/"
_INTERPOLATION = re.compile(r"\$\{([A-Z][A-Z0-9_]*)(?::?[-?][^}]*)?\}")


def _interpolated(value: str) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error} -> a stand-in value per variable."""
    return _INTERPOLATION.sub(lambda m: f"value-of-{m.group(1).lower().replace('_', '-')}", value)


def _database_url(service: str):
    from sqlalchemy.engine import make_url

    return make_url(_interpolated(COMPOSE["services"][service]["environment"]["DATABASE_URL"]))


def _init_scripts(server: str) -> dict[str, str]:
    """The scripts `server` runs when it initializes: {name in the container: text}."""
    mounts = [v for v in COMPOSE["services"][server]["volumes"] if f":{INIT_MOUNT_DIR}" in v]
    assert all(mount.endswith(":ro") for mount in mounts)
    return {mount.split(":")[1].removeprefix(INIT_MOUNT_DIR): (ROOT / mount.split(":", 1)[0]).read_text()
            for mount in mounts}


def _init_script(server: str = "postgres") -> str:
    """The roles and databases script, the same file for every profile's server."""
    scripts = _init_scripts(server)
    assert "10-service-databases.sql" in scripts, f"{server} does not create the services' roles"
    return scripts["10-service-databases.sql"]


def _script_default(name: str) -> str:
    found = re.search(rf"^\\set {name} (\w+)$", _init_script(), flags=re.M)
    assert found, f"the init script sets no default for {name}"
    return found.group(1)


# Each profile: its database server and the services that use it.
PROFILES = {"default": ("postgres", "auth-service", "rag-service"),
            "pgvector": ("postgres-pgvector", "auth-service-pgvector", "rag-service-pgvector")}


@pytest.mark.parametrize("profile", PROFILES)
def test_each_service_has_its_own_database_and_role(profile: str) -> None:
    server, auth_service, rag_service = PROFILES[profile]
    auth, rag = _database_url(auth_service), _database_url(rag_service)
    superuser = COMPOSE["services"][server]["environment"]["POSTGRES_USER"]
    assert (auth.host, rag.host) == (server, server)
    assert (auth.username, auth.database) == (_script_default("auth_role"), _script_default("auth_db"))
    assert (rag.username, rag.database) == (_script_default("rag_role"), _script_default("rag_db"))
    assert auth.username != rag.username and auth.database != rag.database
    assert superuser not in (auth.username, rag.username), "no service may use the superuser"
    # Passwords come from the environment, never literals in the file.
    assert auth.password == "value-of-auth-db-password"
    assert rag.password == "value-of-rag-db-password"
    assert _interpolated(COMPOSE["services"][server]["environment"]["POSTGRES_PASSWORD"]) == "value-of-postgres-password"


@pytest.mark.parametrize("profile", PROFILES)
def test_init_script_gets_the_passwords_and_locks_each_database_to_its_owner(profile: str) -> None:
    server = PROFILES[profile][0]
    script = _init_script(server)
    postgres_env = COMPOSE["services"][server]["environment"]
    for variable in ("AUTH_DB_PASSWORD", "RAG_DB_PASSWORD"):
        assert variable in postgres_env and f" {variable}" in script
    for database, role in (("auth_db", "auth_role"), ("rag_db", "rag_role")):
        assert f'CREATE DATABASE :"{database}" OWNER :"{role}";' in script
        assert f'REVOKE ALL ON DATABASE :"{database}" FROM PUBLIC;' in script
    # Proven on a real server by rag-service/tests/test_compose_databases.py.


def test_rag_service_runs_in_production_mode() -> None:
    assert COMPOSE["services"]["rag-service"]["environment"]["RAG_ENV"] == "production"


def test_env_example_lists_every_interpolated_variable() -> None:
    example = (ROOT / ".env.example").read_text()
    listed = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", example, flags=re.M))
    used = set(_INTERPOLATION.findall((ROOT / "docker-compose.yml").read_text()))
    assert not used - listed, f".env.example lacks {used - listed}"


def test_the_pgvector_server_creates_the_extension_the_rag_role_cannot() -> None:
    scripts = _init_scripts("postgres-pgvector")
    # Entrypoint order is by name: the rag database exists before the extension goes into it.
    assert sorted(scripts) == ["10-service-databases.sql", "20-pgvector.sql"]
    assert re.search(r'^\\connect :"rag_db"\nCREATE EXTENSION IF NOT EXISTS vector;$', scripts["20-pgvector.sql"], flags=re.M)
    assert "\\set rag_db rag" in scripts["20-pgvector.sql"]  # the same default database as 10-
    assert _init_scripts("postgres") == {"10-service-databases.sql": _init_script()}  # no pgvector there
    # Proven on a real pgvector server by rag-service/tests/test_compose_databases.py.


# --- the rag-service's model and chunking settings ----------------------------------------

# Settings fields that choose or tune the models and the chunking (not where files live).
MODEL_SETTING = re.compile(r"^(embedding_|local_embedding_|gemini_|openai_|llm_|chunk_)")


@pytest.mark.parametrize("service", ["rag-service", "rag-service-pgvector"])
def test_every_model_and_chunking_setting_is_forwarded_as_it_is(service: str) -> None:
    from rag_service.config import Settings

    settings = {name.upper() for name in Settings.model_fields if MODEL_SETTING.match(name)}
    environment = COMPOSE["services"][service]["environment"]
    assert settings <= set(environment), f"{service} does not forward {settings - set(environment)}"
    # No value: passed when set in .env or the shell, unset otherwise (the service's default).
    assert {name: environment[name] for name in settings} == dict.fromkeys(settings)
