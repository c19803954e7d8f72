"""Helpers shared by test_faults.py and test_provider_faults.py."""

from __future__ import annotations

import uuid
from typing import Any

CLOSED_PORT = 1  # nothing listens on port 1: connections are refused at once


def new_user() -> str:
    return f"user-{uuid.uuid4().hex[:12]}"


def assert_error_shape(response: Any, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) >= {"code", "message", "request_id"}
    assert error["message"] and error["request_id"] == response.headers["X-Request-ID"]
    if code is not None:
        assert error["code"] == code, error
    assert "Traceback" not in response.text
    return error
