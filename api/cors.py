"""Cross-origin requests: Starlette's CORSMiddleware, with the origins of `ATTUNE_CORS_ORIGINS`.

By default only pages served from localhost or 127.0.0.1 (any port, http or https) may call the
API from a browser; a deployment names its own origins. Keys travel in the Authorization header,
never in cookies, so credentials are not allowed and a page of another origin cannot ride on a
browser's session.
"""

from __future__ import annotations

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

LOCAL_ORIGINS = r"https?://(localhost|127\.0\.0\.1|\[::1\])(:\d{1,5})?"
METHODS = ("GET", "POST", "PUT", "DELETE")
REQUEST_HEADERS = ("Authorization", "Content-Type", "X-API-Key", "Accept", "Last-Event-ID")
EXPOSED_HEADERS = ("Retry-After",)
PREFLIGHT_CACHE_S = 600


class Cors:
    """CORSMiddleware built on the first request, from the settings of the services the app
    built at start-up (they are not known when the app is created)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._cors: CORSMiddleware | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self._cors is None:
            self._cors = cors_for(self.app, scope["app"].state.services.settings.cors_origins)
        await self._cors(scope, receive, send)


def cors_for(app: ASGIApp, origins: list[str]) -> CORSMiddleware:
    return CORSMiddleware(
        app,
        allow_origins=origins,
        allow_origin_regex=None if origins else LOCAL_ORIGINS,
        allow_methods=METHODS,
        allow_headers=REQUEST_HEADERS,
        expose_headers=EXPOSED_HEADERS,
        allow_credentials=False,
        max_age=PREFLIGHT_CACHE_S,
    )
