"""Every dependency of every route runs on the event loop, not in FastAPI's thread pool.

FastAPI runs a plain `def` dependency in its thread pool: one thread hop per dependency
per request (a search had seven, all returning an attribute). The dependencies are
`async def` (deps.py); this keeps a plain `def` from slipping back in.
"""

from __future__ import annotations

import inspect

from fastapi.routing import APIRoute

from rag_service.config import Settings
from rag_service.main import create_app


def dependency_calls(dependant) -> list:  # noqa: ANN001 - fastapi.dependencies.models.Dependant
    calls = []
    for sub in dependant.dependencies:
        calls.append(sub.call)
        calls.extend(dependency_calls(sub))
    return calls


def api_routes(routes) -> list[APIRoute]:  # noqa: ANN001
    """The app's routes, through included routers."""
    found: list[APIRoute] = []
    for route in routes:
        if isinstance(route, APIRoute):
            found.append(route)
        elif hasattr(route, "original_router"):  # FastAPI's wrapper of an included router
            found.extend(api_routes(route.original_router.routes))
    return found


def runs_on_the_loop(call) -> bool:  # noqa: ANN001
    function = call if inspect.isfunction(call) or inspect.ismethod(call) else getattr(call, "__call__", call)
    return inspect.iscoroutinefunction(function) or inspect.isasyncgenfunction(function)


def test_no_route_dependency_is_a_plain_function(tmp_path):
    app = create_app(Settings(_env_file=None, data_dir=tmp_path))
    routes = api_routes(app.routes)
    assert any(route.path == "/search" for route in routes)
    offenders = {
        f"{route.path}: {getattr(call, '__qualname__', call)}"
        for route in routes
        for call in dependency_calls(route.dependant)
        if not runs_on_the_loop(call)
    }
    assert offenders == set()
