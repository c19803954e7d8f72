"""Shared fixtures, in three plugins by concern:

- fixtures_issuer.py: `issuer` / `isolated_issuer`, a real JWKS issuer over HTTP that mints tokens.
- fixtures_apps.py: `settings`, `make_settings`, `app` / `client` / `runtime`, `app_factory`,
  `auth_headers`, `user_id`.
- fixtures_databases.py: the test PostgreSQL servers, uniquely named databases, and
  `database_url` / `db_settings` / `db_app` / `db_client` (run once per database).

Each module's docstring lists its fixtures.
"""

import pytest

pytest_plugins = ["fixtures_issuer", "fixtures_apps", "fixtures_databases"]

# Helpers split out of test files keep pytest's assertion messages.
pytest.register_assert_rewrite("collection_moves_support", "collections_support", "faults_support", "search_support", "security_support")
