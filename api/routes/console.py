"""GET /console: the console for people, a static app from the package's `api/console` folder.

No build step and nothing from a CDN: three files, served as they are. A Content-Security-Policy
lets the page run its own script and style only, so even a rendering mistake cannot run a script
that arrived as data.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter, Response
from fastapi.responses import RedirectResponse

from store.errors import NotFound

router = APIRouter(tags=["console"], include_in_schema=False)
ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
}
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


@router.get("/console")
def console_root() -> Response:
    """The console's page lives at /console/, so its relative asset paths resolve."""
    return RedirectResponse("/console/", status_code=307)


@router.get("/console/")
def console_page() -> Response:
    """The console's page."""
    return _asset("index.html")


@router.get("/console/{name}")
def console_asset(name: str) -> Response:
    """One of the console's files."""
    return _asset(name)


def _asset(name: str) -> Response:
    media_type = ASSETS.get(name)
    if media_type is None:
        raise NotFound(f"the console has no file {name!r}")
    body = files("api.console").joinpath(name).read_bytes()
    return Response(body, media_type=media_type, headers=HEADERS)
