"""Problem details (RFC 9457) for every error: 4xx name the field and the problem, never a 500."""

from __future__ import annotations

import logging
import re
import traceback
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Scope

from store.errors import Conflict, NotFound, StorageFull

log = logging.getLogger("attune.api")
RETRY_AFTER_S = 5  # how long a client waits before retrying a write that found the disk full


def problem(
    status: int,
    title: str,
    detail: str,
    errors: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
    error_id: str | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
    }
    if errors is not None:
        body["errors"] = errors
    if error_id is not None:
        body["error_id"] = error_id
    return JSONResponse(
        body, status_code=status, media_type="application/problem+json", headers=headers
    )


# A check of a whole model names the field its message begins with ("actions[1].id: 'a' appears
# twice"): pydantic gives such an error no location of its own.
_NAMED = re.compile(
    r"(?P<field>[A-Za-z_]\w*(?:\[\d+\])*(?:\.[A-Za-z_]\w*(?:\[\d+\])*)*): (?P<problem>.+)", re.S
)
_VALUE_ERROR = "Value error, "  # pydantic's prefix to the message of a ValueError we raised


def field_errors(errors: Sequence[Mapping[str, Any]], *, skip: int = 0) -> list[dict[str, str]]:
    """pydantic errors as `{"field": "events[2].ts", "problem": "..."}`: the message of a check
    we wrote without pydantic's "Value error, " prefix; a dict's bad key as the key's field
    ("consent.bogus", "not a valid key: ..."); a check whose message begins with a field, of the
    whole body or inside its own field ("context_features[0].time: ..."), as that field; any
    other check of the whole body as "(body)"."""
    out = []
    for err in errors:
        parts: list[str] = []
        problem = str(err["msg"]).removeprefix(_VALUE_ERROR)
        for key in err["loc"][skip:]:
            if isinstance(key, int):
                parts.append(f"[{key}]")
            elif key == "[key]":  # pydantic's marker: the key itself is wrong, not its value
                problem = f"not a valid key: {problem}"
            else:
                parts.append(("." if parts else "") + str(key))
        field = "".join(parts)
        named = _NAMED.fullmatch(problem)
        if named and (not field or _within(named["field"], field)):
            field, problem = named["field"], named["problem"]
        out.append({"field": field or "(body)", "problem": problem})
    return out


def _within(path: str, field: str) -> bool:
    """Whether `path` ("actions[1].id") is `field` ("actions") or lies inside it."""
    return path == field or path.startswith((f"{field}[", f"{field}."))


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = []
        for err in exc.errors():
            loc = list(err["loc"])
            if loc and loc[0] in ("body", "query", "path"):
                loc = loc[1:] if loc[0] == "body" else loc
            errors.append({**err, "loc": tuple(loc)})
        found = field_errors(errors)
        detail = "; ".join(f"{e['field']}: {e['problem']}" for e in found)
        return problem(422, "Invalid request", detail, found)

    @app.exception_handler(NotFound)
    async def _not_found(request: Request, exc: NotFound) -> JSONResponse:
        return problem(404, "Not found", str(exc))

    @app.exception_handler(Conflict)
    async def _conflict(request: Request, exc: Conflict) -> JSONResponse:
        return problem(409, "Conflict", str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        title = {401: "Unauthorized", 403: "Forbidden", 429: "Too many requests"}.get(
            exc.status_code, "Error"
        )
        headers = dict(exc.headers) if exc.headers else None
        return problem(exc.status_code, title, str(exc.detail), headers=headers)

    @app.exception_handler(StorageFull)
    async def _storage_full(request: Request, exc: StorageFull) -> JSONResponse:
        return storage_full(request, exc)

    # The last resort, for errors that escape the access-log middleware (which answers the
    # rest itself, so that the connection stays open and the request is logged).
    app.add_exception_handler(Exception, unexpected)


def route_template(request: Request) -> str:
    """The matched route's path template (`/v1/users/{user_id}`), never the raw path."""
    return scope_route_template(request.scope)


def scope_route_template(scope: Scope) -> str:
    """`route_template` from the request's ASGI scope."""
    return getattr(scope.get("route"), "path", "(no route)")


def storage_full(request: Request, exc: StorageFull) -> JSONResponse:
    """503 with Retry-After: nothing was written, and the same request may succeed later."""
    log.error("storage full on %s %s: %s", request.method, route_template(request), exc)
    return problem(
        503,
        "Storage full",
        f"{exc} Nothing was written; retry after {RETRY_AFTER_S} s.",
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


def unexpected(request: Request, exc: Exception) -> JSONResponse:
    """A 500 problem document with an error id, which is logged with the exception's type and
    stack frames. Not its message nor the request: either may carry PII (a database error
    quotes the values it failed to write)."""
    if isinstance(exc, StorageFull):
        return storage_full(request, exc)
    error_id = uuid.uuid4().hex
    frames = "".join(traceback.format_tb(exc.__traceback__))
    causes: list[str] = []
    cause = exc.__cause__
    while cause is not None and len(causes) < 5:
        causes.append(type(cause).__name__)
        cause = cause.__cause__
    log.error(
        "error %s: unhandled %s%s on %s %s\n%s",
        error_id,
        type(exc).__name__,
        f" (caused by {' <- '.join(causes)})" if causes else "",
        request.method,
        route_template(request),
        frames,
    )
    return problem(
        500,
        "Internal error",
        f"the service failed; quote error id {error_id} when reporting it",
        error_id=error_id,
    )
