"""Cross-origin requests: Starlette's CORSMiddleware, with the origins of `ATTUNE_CORS_ORIGINS`.

By default only pages served from localhost or 127.0.0.1 (any port, http or https) may call the
API from a browser; a deployment names its own origins. Keys travel in the Authorization header,
never in cookies, so credentials are not allowed and a page of another origin cannot ride on a
browser's session.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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
        if not any(name == b"origin" for name, _ in scope["headers"]):
            # Not a cross-origin request (no browser page sent it): all CORSMiddleware does
            # then is add `Vary: Origin` to the answer, which is done here without parsing the
            # request's headers into a Headers object or wrapping `send` in a partial.
            await self.app(scope, receive, vary_origin(send))
            return
        if self._cors is None:
            self._cors = cors_for(self.app, scope["app"].state.services.settings.cors_origins)
        await self._cors(scope, receive, send)


def vary_origin(send: Send) -> Send:
    """`send`, adding `Origin` to the response's Vary header as CORSMiddleware does for a
    request without an Origin (the answer depends on it: a cached copy must not serve a page's
    request)."""

    async def with_vary(message: Message) -> None:
        if message["type"] == "http.response.start":
            message.setdefault("headers", [])
            headers = MutableHeaders(scope=message)
            headers["Vary"] = ", ".join([*headers.getlist("Vary"), "Origin"])
        await send(message)

    return with_vary


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
