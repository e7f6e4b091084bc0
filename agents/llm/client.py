"""The LLM client for any OpenAI-compatible server.

`LLMClient` owns the one retry policy of a call (the SDK's own retries are off): within a
per-request deadline (a `time.monotonic()` instant; the time left becomes each attempt's HTTP
timeout and no attempt starts after it), it retries 429 and 5xx answers with exponential backoff
and jitter, or after the server's Retry-After when it sends one and the deadline allows. A
`CircuitBreaker` (`agents.llm.breaker`), one per upstream and process, fails fast while the
server keeps failing.

The client is one idea at some 300 lines: `complete` and `stream` share the attempt loop, the
breaker's verdicts and the reading of the reply's shape (`agents.llm.wire`), and splitting them
would scatter the one retry policy over several places.

Every failure is an `LLMError` whose message is safe to log: it names the status, the kind of
failure and the timing, never the prompt, the reply or the server's error text (which may echo
the prompt). Each completed call reports its token `Usage`; callers sum them per decision.
"""

from __future__ import annotations

import json
import queue
import random
import threading
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import httpx
import openai
from pydantic import BaseModel, ValidationError

from agents.llm.breaker import CircuitBreaker
from agents.llm.completion import (
    Completion,
    Message,
    StreamEnd,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallReady,
    Usage,
)
from agents.llm.errors import (
    CircuitOpen,
    DeadlineExceeded,
    LLMError,
    MalformedReply,
    UpstreamError,
)
from agents.llm.retry import RetryPolicy, retry_after
from agents.llm.wire import WireUsage, parse_reply
from agents.metrics import LLMCall, Metrics


class LLMClient:
    """Chat completions with one retry policy, a deadline per request and a circuit breaker."""

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str | None,
        model: str,
        timeout_s: float = 10.0,
        retry: RetryPolicy | None = None,
        breaker: CircuitBreaker | None = None,
        rng: random.Random | None = None,
        sleep: Callable[[float], None] = time.sleep,
        metrics: Metrics | None = None,
    ) -> None:
        # The SDK's own retries are off: this class is the one place that decides on retries.
        self._client = openai.OpenAI(
            base_url=base_url, api_key=api_key or "not-needed", timeout=timeout_s, max_retries=0
        )
        self.model = model
        self.timeout_s = timeout_s
        self.retry = retry or RetryPolicy()
        self.breaker = breaker or CircuitBreaker()
        self._rng = rng or random.Random(0)
        self._rng_lock = threading.Lock()
        self._sleep = sleep
        self._metrics = metrics

    def complete(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[dict[str, Any]] | None = None,
        response_format: type[BaseModel] | None = None,
        deadline: float | None = None,
    ) -> Completion:
        """One completion: its text, tool calls and usage; with `response_format`, the reply is
        validated against that pydantic model and returned in `parsed`."""
        with self._measured("complete") as call:
            try:
                completion = self._complete(messages, tools, response_format, deadline)
            except LLMError as error:
                call.error = error_kind(error)
                raise
            call.prompt_tokens = completion.usage.prompt_tokens
            call.completion_tokens = completion.usage.completion_tokens
            return completion

    def _complete(
        self,
        messages: Sequence[Message],
        tools: Sequence[dict[str, Any]] | None,
        response_format: type[BaseModel] | None,
        deadline: float | None,
    ) -> Completion:
        deadline = self._deadline(deadline)
        params = self._params(messages, tools, response_format)
        response = self._attempt(params, deadline, stream=False)
        try:
            reply = parse_reply(response)
        except (TypeError, ValidationError) as error:
            # Well-formed JSON of the wrong shape: the server is misbehaving, like a 5xx.
            self.breaker.failure()
            raise MalformedReply(
                "the model server's reply does not have the shape of a chat completion"
            ) from error
        except BaseException:
            self.breaker.release()
            raise
        self.breaker.success()
        choice = reply.choices[0] if reply.choices else None
        message = choice.message if choice else None
        calls = tuple(
            ToolCall(
                id=c.id or f"call_{i}", name=c.function.name, arguments=c.function.arguments or "{}"
            )
            for i, c in enumerate(message.tool_calls or [] if message else [])
            if c.type in (None, "function") and c.function is not None and c.function.name
        )
        completion = Completion(
            text=(message.content or "") if message else "",
            tool_calls=calls,
            usage=self._usage(reply.usage),
            finish_reason=choice.finish_reason if choice else None,
        )
        if response_format is None:
            return completion
        if not completion.text:
            raise MalformedReply("the model returned no content for the structured output")
        try:
            parsed = response_format.model_validate(json.loads(completion.text))
        except (json.JSONDecodeError, ValidationError) as error:
            raise MalformedReply(
                f"the model's reply is not a valid {response_format.__name__}"
            ) from error
        return Completion(
            completion.text, calls, completion.usage, completion.finish_reason, parsed
        )

    def stream(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[dict[str, Any]] | None = None,
        deadline: float | None = None,
    ) -> Iterator[StreamEvent]:
        """The completion as it arrives: text deltas at once, each tool call when complete, and
        `StreamEnd` with the whole completion and its usage.

        Retries happen only before the first event: once text has been handed out, a failure
        raises `LLMError` instead of repeating it. The deadline holds between chunks too: the
        chunks are read by a helper thread, so a stalled stream is abandoned on time.
        """
        events = self._stream(messages, tools, deadline)
        with self._measured("stream") as call:
            try:
                for event in events:
                    if isinstance(event, StreamEnd):
                        call.prompt_tokens = event.completion.usage.prompt_tokens
                        call.completion_tokens = event.completion.usage.completion_tokens
                    yield event
            except LLMError as error:
                call.error = error_kind(error)
                raise
            finally:
                # A consumer that stops early closes this generator; the inner one settles the
                # breaker's verdict when it is closed, so it is closed now, not at collection.
                events.close()

    def _stream(
        self,
        messages: Sequence[Message],
        tools: Sequence[dict[str, Any]] | None,
        deadline: float | None,
    ) -> Generator[StreamEvent]:
        deadline = self._deadline(deadline)
        params = self._params(messages, tools, None)
        params["stream_options"] = {"include_usage": True}
        stream = self._attempt(params, deadline, stream=True)
        chunks: queue.SimpleQueue[Any] = queue.SimpleQueue()
        done = object()

        def pump() -> None:
            try:
                for chunk in stream:
                    chunks.put(chunk)
                chunks.put(done)
            except Exception as error:  # handed over to the consumer, which raises it
                chunks.put(error)

        threading.Thread(target=pump, name="llm-stream", daemon=True).start()
        text: list[str] = []
        parts: dict[int, dict[str, str]] = {}
        usage = Usage()
        finish: str | None = None
        failed = True
        try:
            while True:
                remaining = deadline - time.monotonic()
                try:
                    chunk = chunks.get(timeout=remaining) if remaining > 0 else None
                except queue.Empty:
                    chunk = None
                if chunk is None:
                    raise DeadlineExceeded("the model's stream did not finish before the deadline")
                if chunk is done:
                    break
                if isinstance(chunk, openai.APIResponseValidationError | UnicodeDecodeError):
                    raise MalformedReply(
                        f"the model's stream is not valid ({type(chunk).__name__})"
                    ) from chunk
                if isinstance(chunk, openai.APIError | httpx.TransportError):
                    raise UpstreamError(
                        f"the model's stream broke off ({type(chunk).__name__})"
                    ) from chunk
                if isinstance(chunk, Exception):
                    raise MalformedReply(
                        f"the model's stream is not valid ({type(chunk).__name__})"
                    ) from chunk
                try:
                    piece = parse_reply(chunk)
                except (TypeError, ValidationError) as error:
                    raise MalformedReply(
                        "a chunk of the model's stream does not have the shape of a completion "
                        "chunk"
                    ) from error
                if piece.usage is not None:
                    usage = self._usage(piece.usage)
                failed = False  # the consumer may stop here; that is no failure of the server
                for choice in piece.choices or []:
                    delta = choice.delta
                    if delta is not None and delta.content:
                        text.append(delta.content)
                        yield TextDelta(delta.content)
                    for streamed in (delta.tool_calls or []) if delta is not None else []:
                        part = parts.setdefault(streamed.index, {"id": "", "name": "", "args": ""})
                        part["id"] = streamed.id or part["id"]
                        if streamed.function is not None:
                            part["name"] = streamed.function.name or part["name"]
                            part["args"] += streamed.function.arguments or ""
                    if choice.finish_reason:
                        finish = choice.finish_reason
                failed = True
            calls = tuple(
                ToolCall(id=p["id"] or f"call_{i}", name=p["name"], arguments=p["args"] or "{}")
                for i, p in sorted(parts.items())
            )
            if any(not call.name for call in calls):
                raise MalformedReply("the model streamed a tool call without a name")
            if finish is None:
                raise MalformedReply("the model's stream ended without a finish reason")
            failed = False
            for call in calls:
                yield ToolCallReady(call)
            yield StreamEnd(Completion("".join(text), calls, usage, finish))
        finally:
            # Every exit settles the breaker's verdict on this attempt; a failed or abandoned
            # stream is closed so its connection is not left half-read.
            if failed:
                self.breaker.failure()
            else:
                self.breaker.success()
            stream.close()

    @contextmanager
    def _measured(self, operation: str) -> Iterator[LLMCall]:
        if self._metrics is None:
            yield LLMCall()
            return
        with self._metrics.llm_call(operation) as call:
            yield call

    def _deadline(self, deadline: float | None) -> float:
        return deadline if deadline is not None else time.monotonic() + self.timeout_s

    def _params(
        self,
        messages: Sequence[Message],
        tools: Sequence[dict[str, Any]] | None,
        response_format: type[BaseModel] | None,
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"model": self.model, "messages": list(messages)}
        if tools:
            params["tools"] = list(tools)
        if response_format is not None:
            params["response_format"] = {
                "type": "json_schema",
                "json_schema": {
                    "name": response_format.__name__.lower(),
                    "schema": response_format.model_json_schema(),
                },
            }
        return params

    def _usage(self, usage: WireUsage | None) -> Usage:
        if usage is None:
            return Usage(calls=1, model=self.model)
        prompt = usage.prompt_tokens or 0
        completion = usage.completion_tokens or 0
        return Usage(
            prompt_tokens=prompt,
            completion_tokens=completion,
            total_tokens=usage.total_tokens or prompt + completion,
            calls=1,
            model=self.model,
        )

    def _attempt(self, params: dict[str, Any], deadline: float, *, stream: bool) -> Any:
        """Send the request, retrying 429 and 5xx while the deadline allows. The breaker's
        verdict on the attempt that returns is left to the caller, who checks the body."""
        attempt = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DeadlineExceeded(
                    f"no attempt started: the deadline passed after {attempt} attempt(s)"
                )
            self.breaker.acquire()
            try:
                response = self._client.chat.completions.create(
                    **params,
                    stream=stream,
                    timeout=remaining,
                )
            except openai.APIStatusError as error:
                status = error.status_code
                retryable = status == 429 or status >= 500
                if not retryable:
                    # The server is up; the request was at fault (ours, not its health).
                    self.breaker.success()
                    raise UpstreamError(
                        f"the model server refused the request: {status} {type(error).__name__}",
                        status=status,
                    ) from error
                self.breaker.failure()
                if attempt >= self.retry.max_retries:
                    raise UpstreamError(
                        f"the model server answered {status} after {attempt + 1} attempt(s)",
                        status=status,
                    ) from error
                wait = retry_after(error.response.headers)
                if wait is None:
                    with self._rng_lock:
                        wait = self.retry.backoff(attempt, self._rng)
                if time.monotonic() + wait >= deadline:
                    raise UpstreamError(
                        f"the model server answered {status}; a retry in {wait:.2f} s would "
                        "pass the deadline",
                        status=status,
                    ) from error
                self._sleep(wait)
                attempt += 1
                continue
            except openai.APITimeoutError as error:
                self.breaker.failure()
                raise DeadlineExceeded(
                    f"no answer from the model server within the deadline ({remaining:.2f} s left "
                    f"at attempt {attempt + 1})"
                ) from error
            except openai.APIConnectionError as error:
                self.breaker.failure()
                raise UpstreamError("cannot reach the model server (connection error)") from error
            except (
                json.JSONDecodeError,
                UnicodeDecodeError,
                openai.APIResponseValidationError,
            ) as error:
                # Bytes that are not UTF-8 fail before the JSON parser has a say.
                self.breaker.failure()
                raise MalformedReply(
                    f"the model server's reply is not valid JSON ({type(error).__name__})"
                ) from error
            except BaseException:
                self.breaker.release()  # not the server's doing; re-raised as it is
                raise
            # The verdict on this attempt is the caller's, once it has read the reply's shape.
            return response


def error_kind(error: LLMError) -> str:
    """The metrics label of a failed call: a fixed word per error class, never its message."""
    if isinstance(error, CircuitOpen):
        return "circuit_open"
    if isinstance(error, DeadlineExceeded):
        return "deadline"
    if isinstance(error, MalformedReply):
        return "malformed"
    return "upstream"
