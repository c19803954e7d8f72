"""Helpers shared by test_security_attacks.py and test_malformed_requests.py."""

from __future__ import annotations

import uuid
from typing import Any


def new_user() -> str:
    return f"user-{uuid.uuid4().hex[:12]}"


def assert_json_error(response: Any, status: int | tuple[int, ...]) -> dict:
    statuses = (status,) if isinstance(status, int) else status
    assert response.status_code in statuses, response.text
    assert response.headers["content-type"].startswith("application/json"), response.headers
    error = response.json()["error"]
    assert error["code"] and error["message"] and error["request_id"]
    return error
