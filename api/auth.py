"""Who is calling, and what they may do: API keys with scopes, subject binding, rate limits,
and the request size limit.

With `ATTUNE_AUTH=keys` every route but /healthz needs `Authorization: Bearer <key>`; a key
holds scopes (`decide`, `chat`, `copy`, `events`, `admin`, `eval`, `metrics`, `reports`) and may
be bound to one user, in which case it acts for that user only: naming any other user, or an
anonymous id linked to another user, is a 403, whatever the scopes. A bound key is never admin, nor reads the
service-wide /metrics or reports (`store.access`); an unbound key with `metrics` reads /metrics
only, one with `reports` the drift and experiment reports only.
With `ATTUNE_AUTH=off` (the local default, allowed only on a loopback address) every caller has
every scope; /healthz says so.

Rate limits are per key, a moving window kept in `ATTUNE_RATE_LIMIT_STORAGE`: by default
`memory://`, per worker process (with several workers the effective limit is the limit times the
number of workers), counted here (`MovingWindow`); a shared storage such as `redis://host:6379`
gives every worker one budget per key, counted by `limits`.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from limits import RateLimitItemPerMinute
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agents.services import Services
from store.access import KeyInfo, check_key
from store.errors import Conflict
from store.users import link_owner


@dataclass(frozen=True)
class Caller:
    """The caller of one request: its key (None with authentication off)."""

    key: KeyInfo | None

    @property
    def actor(self) -> str:
        return f"key:{self.key.key_id}" if self.key else "local"

    @property
    def bound_user(self) -> str | None:
        return self.key.subject_user_id if self.key else None

    def has(self, scope: str) -> bool:
        return self.key is None or scope in self.key.effective_scopes

    def act_for(self, user_id: str | None, *, what: str = "this request") -> None:
        """403 unless this caller may act for `user_id` (a bound key: only its own user)."""
        bound = self.bound_user
        if bound is not None and user_id != bound:
            raise HTTPException(
                403, f"this API key acts for user {bound!r} only; {what} is for another subject"
            )

    def act_for_anonymous(
        self, services: Services, user_id: str | None, anonymous_id: str | None
    ) -> None:
        """403 if this caller is bound and `anonymous_id` is linked to another user (a bound
        key uses only anonymous ids that are unlinked or its own user's); 409 for anyone naming
        `user_id` with an anonymous id linked to someone else, which would mix two people."""
        if anonymous_id is None:
            return
        with services.db.session() as session:
            owner = link_owner(session, "anonymous", anonymous_id)
        bound = self.bound_user
        if bound is not None and owner not in (None, bound):
            raise HTTPException(
                403,
                f"anonymous_id: linked to another user; this API key acts for user {bound!r} only",
            )
        if user_id is not None and owner not in (None, user_id):
            raise Conflict(
                "anonymous_id: linked to another user; send it without user_id, or with theirs"
            )

    def may_read_user(self, user_id: str) -> None:
        """403 unless this caller is an admin or a key bound to exactly this user."""
        if self.bound_user is not None:
            self.act_for(user_id, what="the user in the path")
        elif not self.has("admin"):
            raise HTTPException(403, "reading or changing a user needs the 'admin' scope")


class RateLimits:
    def __init__(self, per_minute: int, storage: str = "memory://") -> None:
        """`storage`: a `limits` storage URI (`memory://`, `redis://host:port`, ...)."""
        self._item = RateLimitItemPerMinute(per_minute)
        self._window: MovingWindow | None = None
        self._limiter: MovingWindowRateLimiter | None = None
        if storage == "memory://":
            self._window = MovingWindow(per_minute, WINDOW_S)
        else:
            self._limiter = MovingWindowRateLimiter(storage_from_string(storage))

    def hit(self, key_id: str) -> int | None:
        """None if allowed; else the seconds to wait."""
        if self._window is not None:
            return self._window.hit(key_id)
        assert self._limiter is not None
        if self._limiter.hit(self._item, key_id):
            return None
        reset = self._limiter.get_window_stats(self._item, key_id).reset_time
        return max(1, int(reset - time.time()) + 1)


WINDOW_S = 60.0  # the rate limit is per minute


class MovingWindow:
    """The per-process limit (`memory://`): at most `limit` hits per key in any `window_s`
    seconds, as `limits`' moving window counts them, without its memory storage. That storage
    starts a timer thread on every hit that finds the last one finished (at a few requests a
    second, on nearly every request), and the request waits until the new thread has started:
    the thread's creation, and a turn of the GIL it takes from the event loop, on every request.
    Here a key's deque holds the times of its hits still in the window, and a hit drops the
    ones that left it."""

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit = limit
        self.window_s = window_s
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()  # a dependency may run in a worker thread

    def hit(self, key_id: str) -> int | None:
        """None if allowed (and counted); else the seconds until the oldest hit leaves."""
        now = time.monotonic()
        with self._lock:
            hits = self._hits.setdefault(key_id, deque())
            while hits and hits[0] < now - self.window_s:
                hits.popleft()
            if len(hits) >= self.limit:
                return max(1, int(hits[0] + self.window_s - now) + 1)
            hits.append(now)
            return None


def _presented_key(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip() or None
    return request.headers.get("x-api-key") or None


def require(*scopes: str) -> Callable[..., Awaitable[Caller]]:
    """A dependency: the caller, who must hold one of `scopes` (any scope if none are given)."""

    # The request is its only parameter: the services are read off the app's state rather than
    # through `ServicesDep`, a sub-dependency FastAPI would solve (its parameters, its cache
    # key) on every request for an attribute read.
    async def dependency(request: Request) -> Caller:
        services: Services = request.app.state.services
        if services.settings.auth == "off":
            return Caller(None)
        presented = _presented_key(request)
        if presented is None:
            raise HTTPException(
                401,
                "missing API key: send 'Authorization: Bearer <key>' (create one with "
                "'attune keys create')",
                headers={"WWW-Authenticate": "Bearer"},
            )
        # A read by primary key on a pooled connection, on every request: a key revoked by any
        # worker or `attune keys revoke` is refused by the next request.
        key = check_key(services.db.engine, presented)
        if key is None:
            raise HTTPException(
                401, "unknown or revoked API key", headers={"WWW-Authenticate": "Bearer"}
            )
        wait = request.app.state.rate_limits.hit(key.key_id)
        if wait is not None:
            raise HTTPException(
                429,
                f"rate limit of {services.settings.rate_limit_per_minute} requests a minute "
                f"reached for key {key.key_id}; retry in {wait} s",
                headers={"Retry-After": str(wait)},
            )
        if scopes and not any(scope in key.effective_scopes for scope in scopes):
            ignored = [s for s in key.scopes if s not in key.effective_scopes]
            raise HTTPException(
                403,
                f"this API key lacks the {' or '.join(repr(s) for s in scopes)} scope "
                f"(it has: {', '.join(key.effective_scopes) or 'none'}"
                + (f"; {', '.join(ignored)} ignored on a key bound to a user)" if ignored else ")"),
            )
        return Caller(key)

    return dependency


DecideCaller = Annotated[Caller, Depends(require("decide", "chat"))]
EventsCaller = Annotated[Caller, Depends(require("events"))]
FeedbackCaller = Annotated[Caller, Depends(require("decide", "events", "chat"))]
DecisionsCaller = Annotated[Caller, Depends(require("admin", "eval", "decide", "chat"))]
AnyCaller = Annotated[Caller, Depends(require())]  # the route checks what the caller may see
AdminCaller = Annotated[Caller, Depends(require("admin"))]
ChatCaller = Annotated[Caller, Depends(require("chat"))]
CopyCaller = Annotated[Caller, Depends(require("copy"))]
MetricsCaller = Annotated[Caller, Depends(require("metrics", "admin"))]
EvalCaller = Annotated[Caller, Depends(require("eval", "admin"))]
ReportsCaller = Annotated[Caller, Depends(require("reports", "admin"))]


class BodyLimit:
    """Refuses request bodies over `ATTUNE_MAX_BODY_BYTES` with a 413, by Content-Length or,
    for a body sent without one, while it is read."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = scope["app"].state.services.settings.max_body_bytes
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await _too_large(send, limit)
            return
        if length is not None:
            await self.app(scope, receive, send)
            return
        # No Content-Length (a chunked body): read it here, up to the limit, then replay it.
        chunks: list[Message] = []
        seen = 0
        while True:
            message = await receive()
            chunks.append(message)
            if message["type"] != "http.request":
                break
            seen += len(message.get("body", b""))
            if seen > limit:
                await _too_large(send, limit)
                return
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return chunks.pop(0) if chunks else await receive()

        await self.app(scope, replay, send)


async def _too_large(send: Send, limit: int) -> None:
    body = json.dumps(
        {
            "type": "about:blank",
            "title": "Payload too large",
            "status": 413,
            "detail": f"request body larger than {limit} bytes (ATTUNE_MAX_BODY_BYTES)",
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/problem+json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


# Catalog reads (an item, similar items): callers who decide, chat or write copy read the catalog.
CatalogCaller = Annotated[Caller, Depends(require("decide", "chat", "copy", "admin"))]
