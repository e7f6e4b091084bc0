"""A typed client for Attune's API, sync (`Attune`) and async (`AsyncAttune`), over httpx.

    with Attune("http://127.0.0.1:8000", api_key="...") as attune:
        decision = attune.decide(channel="web", user_id="u_0001", query="tea")
        for event in attune.chat_stream("something for a tea lover?", user_id="u_0001"):
            print(event.text, end="")

Every answer that is not a success raises an `AttuneError` (`attune.errors`) carrying the
problem document; a streamed chat that ends with an `error` event raises `ServerError`.
The client imports nothing of the service: it is the API, seen from outside.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel

from attune.errors import AttuneError, ServerError, error_for
from attune.models import (
    ChatAnswer,
    ChatEvent,
    CopyJob,
    CopyResult,
    Decision,
    EventsResult,
    Feedback,
    User,
)

__all__ = ["AsyncAttune", "Attune", "AttuneError"]

Model = TypeVar("Model", bound=BaseModel)
DEFAULT_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class _Call:
    method: str
    path: str
    body: dict[str, Any] | None = None


def _drop_none(**fields: Any) -> dict[str, Any]:
    return {key: value for key, value in fields.items() if value is not None}


def _user_path(user_id: str, suffix: str = "") -> str:
    return f"/v1/users/{quote(user_id, safe='')}{suffix}"


class _Calls:
    """The requests of each operation, shared by the sync and async clients."""

    @staticmethod
    def decide(**fields: Any) -> _Call:
        return _Call("POST", "/v1/decide", _drop_none(**fields))

    @staticmethod
    def chat(message: str, stream: bool, **fields: Any) -> _Call:
        return _Call("POST", "/v1/chat", _drop_none(message=message, stream=stream, **fields))

    @staticmethod
    def events(events: Iterable[dict[str, Any]]) -> _Call:
        return _Call("POST", "/v1/events", {"events": list(events)})

    @staticmethod
    def feedback(decision_id: str, reward: float) -> _Call:
        return _Call("POST", "/v1/feedback", {"decision_id": decision_id, "reward": reward})


def _check(response: httpx.Response) -> None:
    if response.is_success:
        return
    try:
        problem = response.json()
    except ValueError:
        problem = {"title": response.reason_phrase, "detail": response.text[:500]}
    if not isinstance(problem, dict):
        problem = {"title": response.reason_phrase, "detail": str(problem)[:500]}
    raise error_for(response.status_code, problem, response.headers.get("retry-after"))


def _parse(model: type[Model], response: httpx.Response) -> Model:
    _check(response)
    return model.model_validate(response.json())


def _copy(response: httpx.Response) -> CopyResult | CopyJob:
    _check(response)
    return (CopyJob if response.status_code == 202 else CopyResult).model_validate(response.json())


class _SSE:
    """Server-sent events read line by line: `event:` and `data:` fields, a blank line ends one."""

    def __init__(self) -> None:
        self.event = "message"
        self.data: list[str] = []

    def feed(self, line: str) -> ChatEvent | None:
        if line:
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                self.event = value
            elif field == "data":
                self.data.append(value)
            return None
        if not self.data:
            return None
        event, data = self.event, json.loads("\n".join(self.data))
        self.event, self.data = "message", []
        if event == "error":
            raise ServerError(500, data)
        return ChatEvent(event=event, data=data)


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


class Attune:
    """The sync client. `base_url`: where Attune answers; `api_key`: with ATTUNE_AUTH=keys."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        http: httpx.Client | None = None,
    ) -> None:
        self._http = http or httpx.Client(
            base_url=base_url, headers=_headers(api_key), timeout=timeout
        )

    def __enter__(self) -> Attune:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, call: _Call) -> httpx.Response:
        return self._http.request(call.method, call.path, json=call.body)

    def decide(
        self,
        *,
        channel: str,
        user_id: str | None = None,
        anonymous_id: str | None = None,
        query: str | None = None,
        context: dict[str, str] | None = None,
        k: int | None = None,
    ) -> Decision:
        """Items, an offer and copy for a person, with an explanation."""
        call = _Calls.decide(
            channel=channel,
            user_id=user_id,
            anonymous_id=anonymous_id,
            query=query,
            context=context,
            k=k,
        )
        return _parse(Decision, self._send(call))

    def events(self, events: Iterable[dict[str, Any]]) -> EventsResult:
        """Record events (views, purchases, ...); each is accepted, a duplicate, or rejected."""
        return _parse(EventsResult, self._send(_Calls.events(events)))

    def feedback(self, decision_id: str, reward: float) -> Feedback:
        """Reward a decision (1: converted, 0: not)."""
        return _parse(Feedback, self._send(_Calls.feedback(decision_id, reward)))

    def chat(
        self,
        message: str,
        *,
        user_id: str | None = None,
        anonymous_id: str | None = None,
        thread_id: str | None = None,
        channel: str | None = None,
    ) -> ChatAnswer:
        """One chat turn, answered whole."""
        call = _Calls.chat(
            message,
            False,
            user_id=user_id,
            anonymous_id=anonymous_id,
            thread_id=thread_id,
            channel=channel,
        )
        return _parse(ChatAnswer, self._send(call))

    def chat_stream(
        self,
        message: str,
        *,
        user_id: str | None = None,
        anonymous_id: str | None = None,
        thread_id: str | None = None,
        channel: str | None = None,
    ) -> Iterator[ChatEvent]:
        """One chat turn as its events: `tool`, `token`, `reset`, then `final`."""
        call = _Calls.chat(
            message,
            True,
            user_id=user_id,
            anonymous_id=anonymous_id,
            thread_id=thread_id,
            channel=channel,
        )
        with self._http.stream(call.method, call.path, json=call.body) as response:
            if not response.is_success:
                response.read()
                _check(response)
            sse = _SSE()
            for line in response.iter_lines():
                if (event := sse.feed(line)) is not None:
                    yield event

    def copy(self, request: dict[str, Any]) -> CopyResult | CopyJob:
        """Copy variants per segment for a brief and an audience (a job for large audiences)."""
        return _copy(self._send(_Call("POST", "/v1/copy", request)))

    def user(self, user_id: str) -> User:
        return _parse(User, self._send(_Call("GET", _user_path(user_id))))

    def update_user(
        self,
        user_id: str,
        *,
        profile: dict[str, Any] | None = None,
        consent: dict[str, bool] | None = None,
    ) -> User:
        body = _drop_none(profile=profile, consent=consent)
        return _parse(User, self._send(_Call("PUT", _user_path(user_id), body)))

    def export_user(self, user_id: str) -> dict[str, Any]:
        """Everything held about a person (GDPR access)."""
        response = self._send(_Call("GET", _user_path(user_id, "/export")))
        _check(response)
        return dict(response.json())

    def erase_user(self, user_id: str) -> dict[str, Any]:
        """Erase a person everywhere; what was removed."""
        response = self._send(_Call("DELETE", _user_path(user_id)))
        _check(response)
        return dict(response.json())


class AsyncAttune:
    """The async client: the same operations as `Attune`, awaited."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self._http = http or httpx.AsyncClient(
            base_url=base_url, headers=_headers(api_key), timeout=timeout
        )

    async def __aenter__(self) -> AsyncAttune:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def _send(self, call: _Call) -> httpx.Response:
        return await self._http.request(call.method, call.path, json=call.body)

    async def decide(
        self,
        *,
        channel: str,
        user_id: str | None = None,
        anonymous_id: str | None = None,
        query: str | None = None,
        context: dict[str, str] | None = None,
        k: int | None = None,
    ) -> Decision:
        call = _Calls.decide(
            channel=channel,
            user_id=user_id,
            anonymous_id=anonymous_id,
            query=query,
            context=context,
            k=k,
        )
        return _parse(Decision, await self._send(call))

    async def events(self, events: Iterable[dict[str, Any]]) -> EventsResult:
        return _parse(EventsResult, await self._send(_Calls.events(events)))

    async def feedback(self, decision_id: str, reward: float) -> Feedback:
        return _parse(Feedback, await self._send(_Calls.feedback(decision_id, reward)))

    async def chat(
        self,
        message: str,
        *,
        user_id: str | None = None,
        anonymous_id: str | None = None,
        thread_id: str | None = None,
        channel: str | None = None,
    ) -> ChatAnswer:
        call = _Calls.chat(
            message,
            False,
            user_id=user_id,
            anonymous_id=anonymous_id,
            thread_id=thread_id,
            channel=channel,
        )
        return _parse(ChatAnswer, await self._send(call))

    async def chat_stream(
        self,
        message: str,
        *,
        user_id: str | None = None,
        anonymous_id: str | None = None,
        thread_id: str | None = None,
        channel: str | None = None,
    ) -> AsyncIterator[ChatEvent]:
        call = _Calls.chat(
            message,
            True,
            user_id=user_id,
            anonymous_id=anonymous_id,
            thread_id=thread_id,
            channel=channel,
        )
        async with self._http.stream(call.method, call.path, json=call.body) as response:
            if not response.is_success:
                await response.aread()
                _check(response)
            sse = _SSE()
            async for line in response.aiter_lines():
                if (event := sse.feed(line)) is not None:
                    yield event

    async def copy(self, request: dict[str, Any]) -> CopyResult | CopyJob:
        return _copy(await self._send(_Call("POST", "/v1/copy", request)))

    async def user(self, user_id: str) -> User:
        return _parse(User, await self._send(_Call("GET", _user_path(user_id))))

    async def update_user(
        self,
        user_id: str,
        *,
        profile: dict[str, Any] | None = None,
        consent: dict[str, bool] | None = None,
    ) -> User:
        body = _drop_none(profile=profile, consent=consent)
        return _parse(User, await self._send(_Call("PUT", _user_path(user_id), body)))

    async def export_user(self, user_id: str) -> dict[str, Any]:
        response = await self._send(_Call("GET", _user_path(user_id, "/export")))
        _check(response)
        return dict(response.json())

    async def erase_user(self, user_id: str) -> dict[str, Any]:
        response = await self._send(_Call("DELETE", _user_path(user_id)))
        _check(response)
        return dict(response.json())
