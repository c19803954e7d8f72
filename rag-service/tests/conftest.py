"""Shared fixtures, in three plugins by concern:

- fixtures_issuer.py: `issuer` / `isolated_issuer`, a real JWKS issuer over HTTP that mints tokens.
- fixtures_apps.py: `settings`, `make_settings`, `app` / `client` / `runtime`, `app_factory`,
  `auth_headers`, `user_id`.
- fixtures_databases.py: the test PostgreSQL servers, uniquely named databases, and
  `database_url` / `db_settings` / `db_app` / `db_client` (run once per database).

Each module's docstring lists its fixtures.
"""

import os
from pathlib import Path

import pytest

# The ONNX graph of the default encoder is exported once (~15-60 s) into one cache that
# every test, subprocess and test run shares (under the repository's git-ignored data/,
# which `make clean` empties), not once per data dir. test_onnx_backend.py exports into
# folders of its own to test the export itself.
os.environ.setdefault("MODEL_CACHE_DIR", str(Path(__file__).resolve().parents[2] / "data" / "model-cache"))

pytest_plugins = ["fixtures_issuer", "fixtures_apps", "fixtures_databases"]

# Helpers split out of test files keep pytest's assertion messages.
pytest.register_assert_rewrite("collection_moves_support", "collections_support", "faults_support", "search_support", "security_support")
