"""The client's exceptions: one base carrying the API's problem document, a few kinds."""

from __future__ import annotations

from typing import Any


class AttuneError(Exception):
    """An answer of the API that is not a success, with its problem document (RFC 9457)."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status = status
        self.problem = problem
        super().__init__(f"{status} {self.title}: {self.detail}")

    @property
    def title(self) -> str:
        return str(self.problem.get("title", "Error"))

    @property
    def detail(self) -> str:
        return str(self.problem.get("detail", ""))

    @property
    def errors(self) -> list[dict[str, str]]:
        """Each invalid field and its problem (422)."""
        return list(self.problem.get("errors") or [])


class AuthError(AttuneError):
    """401 (no valid key) or 403 (the key lacks the scope, or acts for another person)."""


class NotFoundError(AttuneError):
    """404."""


class InvalidRequest(AttuneError):
    """409, 413 or 422: the request must change; `errors` names the fields."""


class RateLimited(AttuneError):
    """429: retry after `retry_after` seconds."""

    def __init__(self, status: int, problem: dict[str, Any], retry_after: float | None) -> None:
        super().__init__(status, problem)
        self.retry_after = retry_after


class ServerError(AttuneError):
    """5xx, or a stream that ended with an `error` event; `problem` may carry an `error_id`."""


def error_for(status: int, problem: dict[str, Any], retry_after: str | None = None) -> AttuneError:
    if status in (401, 403):
        return AuthError(status, problem)
    if status == 404:
        return NotFoundError(status, problem)
    if status == 429:
        return RateLimited(status, problem, float(retry_after) if retry_after else None)
    if status >= 500:
        return ServerError(status, problem)
    return InvalidRequest(status, problem)
