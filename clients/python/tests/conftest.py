"""Fixtures shared by the client's unit tests (services_support.py has the fake services)."""

from __future__ import annotations

import pytest

from services_support import Clock, Services


@pytest.fixture
def services() -> Services:
    """The auth-service's token routes and a few rag-service routes, in memory."""
    return Services()


@pytest.fixture
def clock() -> Clock:
    return Clock()
