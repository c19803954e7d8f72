"""Property-based API testing with Schemathesis against the app's own OpenAPI schema.

The app runs in-process (ASGI, its real lifespan: migrations, MiniLM, Qdrant Edge, SQLite)
and every operation is called with a valid bearer token from the test JWKS issuer.
Schemathesis generates valid and invalid requests (positive and negative modes) and checks:
- no 5xx (`not_a_server_error`);
- every response body matches the documented schema (`response_schema_conformance`);
- every status code and content type is documented (`status_code_conformance`,
  `content_type_conformance`).
Invalid requests (negative mode: wrong types, missing token...) must get a documented 4xx
with the documented error body, so the error paths are checked too.
Bounded and deterministic: a fixed number of examples per operation, derandomized.

Not used: `negative_data_rejection`. Pydantic's lax mode accepts `0` for a boolean and
`"5"` for an integer in JSON bodies (and query strings are always strings), which that
check counts as "schema-violating request accepted"; the coercion is harmless and making
every request model strict is an API decision, not a test relaxation (see docs/security.md).
`/chat` answers `text/event-stream` when asked; that content type is documented on its 200
without a schema, so Schemathesis checks its status and content type but not its events
(test_chat_stream.py parses them).
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi as schemathesis_asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from fixtures_apps import settings_for
from rag_service.config import Settings
from rag_service.main import create_app

MAX_EXAMPLES = 15
BASE_URL = f"http://{schemathesis_asgi.HOST}"
CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance, content_type_conformance]


@pytest.fixture(scope="module")
def rag_app(issuer: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    app = create_app(settings_for(issuer, tmp_path_factory.mktemp("schemathesis")))
    yield app
    # Schemathesis keeps in-process apps' lifespans running; close ours (runtime, DB, store).
    schemathesis_asgi.shutdown_lifespans()


@pytest.fixture(scope="module")
def bearer(issuer: Any) -> dict[str, str]:
    # One user for the whole run; tokens live 15 minutes, far longer than this module.
    return {"Authorization": f"Bearer {issuer.mint(f'fuzz-{uuid.uuid4().hex[:12]}')}"}


# The schema is read at collection time from an app that is built but never started (no
# lifespan: nothing is loaded or written); the requests go to `rag_app`, which is started.
schema = schemathesis.openapi.from_dict(create_app(Settings(_env_file=None)).openapi())


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
          phases=[Phase.explicit, Phase.generate],
          suppress_health_check=list(HealthCheck))
def test_every_operation_conforms_to_its_schema(case: Any, rag_app: Any, bearer: dict[str, str]) -> None:
    response = case.call(app=rag_app, base_url=BASE_URL, headers=bearer)
    case.validate_response(response, checks=CHECKS, headers=bearer,
                           transport_kwargs={"app": rag_app, "base_url": BASE_URL, "headers": bearer})
