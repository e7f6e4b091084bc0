"""Problem details (RFC 9457) for every error: 4xx name the field and the problem, never a 500."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from store.errors import Conflict, NotFound

log = logging.getLogger("attune.api")


def problem(
    status: int,
    title: str,
    detail: str,
    errors: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
    }
    if errors is not None:
        body["errors"] = errors
    return JSONResponse(
        body, status_code=status, media_type="application/problem+json", headers=headers
    )


def field_errors(errors: Sequence[Mapping[str, Any]], *, skip: int = 0) -> list[dict[str, str]]:
    """pydantic errors as `{"field": "events[2].ts", "problem": "..."}`."""
    out = []
    for err in errors:
        parts: list[str] = []
        for key in err["loc"][skip:]:
            if isinstance(key, int):
                parts.append(f"[{key}]")
            else:
                parts.append(("." if parts else "") + str(key))
        out.append({"field": "".join(parts) or "(body)", "problem": err["msg"]})
    return out


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

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Logged without the request body: it may carry PII.
        log.exception("unhandled %s on %s %s", type(exc).__name__, request.method, request.url.path)
        return problem(500, "Internal error", "the service failed; the error was logged")
