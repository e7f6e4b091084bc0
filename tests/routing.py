"""Every route of the app, also those of included routers.

FastAPI 0.165 keeps an included router as one `_IncludedRouter` entry of `app.routes`, so a walk of
the top level alone sees only the app's own routes; tests that promise "every route" walk this.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from fastapi.routing import APIRoute
from starlette.routing import BaseRoute


def api_routes(routes: Iterable[BaseRoute]) -> Iterator[APIRoute]:
    """Every APIRoute under `routes`, nested ones included, with their full paths."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        nested = getattr(route, "original_router", None)
        if nested is not None:
            yield from api_routes(nested.routes)
