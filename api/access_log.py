"""One access line and one latency observation per request, by route template, never raw path.

A plain ASGI middleware rather than `@app.middleware("http")`: Starlette's `BaseHTTPMiddleware`
runs every request through a task group and a pair of memory streams to hand the response back,
which costs more than the rest of the stack for a small answer. This one only watches the
`http.response.start` message go by.
"""

from __future__ import annotations

import logging
import time

from prometheus_client import Histogram
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agents.metrics import http_method, status_class
from api import errors

access = logging.getLogger("attune.access")


class AccessLog:
    """Times each request up to the start of its response (as the histogram's help says: the
    time to answer), observes it in `attune_http_request_duration_seconds` and logs one line.
    An error that escapes the app before it answered is answered here, as a logged 500 problem
    document, rather than by Starlette's last-resort handler, which re-raises after answering:
    the server would then drop the keep-alive connection without `Connection: close`, and no
    line would be written."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # The histogram's child of each label set seen, found by one dict lookup instead of
        # `labels()` (its checks, a lock) on every request. The labels are the histogram's own,
        # a fixed vocabulary (route templates, status classes), so this stays as small as it.
        self._latency: tuple[Histogram, dict[tuple[str, str, str], Histogram]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        answered = False

        async def timed(message: Message) -> None:
            nonlocal answered
            if message["type"] == "http.response.start" and not answered:
                answered = True
                self._record(scope, message["status"], time.perf_counter() - started)
            await send(message)

        try:
            await self.app(scope, receive, timed)
        except Exception as exc:
            if answered:
                raise  # the status line is gone; nothing else can be said to this client
            await errors.unexpected(Request(scope), exc)(scope, receive, timed)

    def _record(self, scope: Scope, status: int, elapsed: float) -> None:
        method = scope["method"]
        template = errors.scope_route_template(scope)
        family = scope["app"].state.services.metrics.http_latency
        if self._latency is None or self._latency[0] is not family:
            self._latency = (family, {})
        labels = (http_method(method), template, status_class(status))
        child = self._latency[1].get(labels)
        if child is None:
            child = self._latency[1].setdefault(labels, family.labels(*labels))
        child.observe(elapsed)
        access.info(
            "%s %s %s %.1f ms",
            method,
            template,
            status,
            elapsed * 1000,
            # Fields of their own for JSON logs (ATTUNE_LOG_FORMAT=json).
            extra={
                "method": method,
                "route": template,
                "status": status,
                "duration_ms": round(elapsed * 1000, 1),
            },
        )
