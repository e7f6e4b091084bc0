"""What every request pays before its route runs: no hop through a worker thread to solve a
dependency, and no middleware that runs the request in a task group of its own."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from pathlib import Path

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from starlette.middleware.base import BaseHTTPMiddleware

from agents.settings import Settings
from api.app import create_app
from tests.routing import api_routes


def _dependencies(dependant: Dependant) -> Iterator[Dependant]:
    for sub in dependant.dependencies:
        yield sub
        yield from _dependencies(sub)


def _app(tmp_path: Path) -> FastAPI:
    return create_app(Settings(home=tmp_path))  # services are built at start-up, not here


def test_no_dependency_of_any_route_runs_in_the_threadpool(tmp_path: Path) -> None:
    # FastAPI runs a plain `def` dependency in its threadpool: a worker-thread hop on every
    # request for what is an attribute read (the services) or a check on the loop (the caller).
    routes = list(api_routes(_app(tmp_path).routes))
    assert any(route.path == "/v1/decide" for route in routes)
    hopping = sorted(
        {
            f"{route.path}: {dep.call.__qualname__}"
            for route in routes
            for dep in _dependencies(route.dependant)
            if dep.call is not None and not inspect.iscoroutinefunction(dep.call)
        }
    )
    assert hopping == []


def test_no_middleware_is_a_base_http_middleware(tmp_path: Path) -> None:
    # `@app.middleware("http")` wraps the rest of the stack in a task group and memory streams
    # for each request; the access log watches the response start go by instead.
    kinds = [middleware.cls for middleware in _app(tmp_path).user_middleware]
    assert kinds and BaseHTTPMiddleware not in kinds
