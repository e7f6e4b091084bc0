"""A fake OpenAI-compatible server on 127.0.0.1 with scripted replies, for the real `openai` client.

Written by hand on the standard library's HTTP server: the point is to speak the wire format of
`POST /v1/chat/completions` exactly as a remote server would, with no mocking of the SDK.
Each request takes the next `Reply` from the script (the last one repeats); every request body is
kept so tests can check what reached the model, and every exchange records when the request
arrived and when each streamed chunk left (`time.perf_counter()`, comparable within the process).

A reply can be plain text, tool calls, either of them streamed as server-sent events
(`chat.completion.chunk` objects, usage last when the request asks for it, then `[DONE]`), a
raw body (malformed JSON), or an error status with headers (429 with Retry-After, 500); it can
wait before its first byte and between chunks.

A reply can also be one of the scripted `FAULTS`, each sent in the form that fits the request
(one body, or an event stream that starts well and then goes wrong):
- `not-utf8`: bytes that are not UTF-8 inside otherwise valid JSON;
- `wrong-shape`: valid JSON that is not a completion (`choices` an object, a chunk a string);
- `wrong-types`: a completion whose usage counts are a string and a list;
- `cut`: the connection closes half-way through the body or the stream, without `[DONE]`.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

Body = dict[str, Any]
Fault = Literal["not-utf8", "wrong-shape", "wrong-types", "cut"]
FAULTS: tuple[Fault, ...] = ("not-utf8", "wrong-shape", "wrong-types", "cut")
BAD_BYTES = b"\xff\xfe\xc3\x28"  # not UTF-8: a lone continuation and a broken sequence


@dataclass(frozen=True)
class Call:
    """A tool call the scripted model makes; `arguments` as a dict or as raw JSON text."""

    name: str
    arguments: dict[str, Any] | str = field(default_factory=dict)
    id: str | None = None

    def arguments_text(self) -> str:
        return self.arguments if isinstance(self.arguments, str) else json.dumps(self.arguments)


@dataclass(frozen=True)
class Reply:
    # The assistant message's content, or a function of the request body that returns it.
    content: str | Callable[[Body], str | None] | None = None
    status: int = 200  # a non-200 status is sent with an OpenAI-style error body
    delay_s: float = 0.0  # before the first byte of the response
    # Tool calls the model makes, or a function of the request body that returns them.
    tool_calls: list[Call] | Callable[[Body], list[Call]] | None = None
    chunks: list[str] | None = None  # streamed content pieces; default: the content word by word
    chunk_delay_s: float = 0.0  # between streamed chunks
    headers: dict[str, str] = field(default_factory=dict)  # e.g. {"Retry-After": "1"}
    # A body sent as it is (malformed JSON, or bytes that are not UTF-8); as an event stream
    # when the request streams.
    raw: str | bytes | None = None
    usage: tuple[int, int] = (10, 5)  # prompt and completion tokens
    fault: Fault | None = None  # a scripted malformed reply (see the module's docstring)


@dataclass
class Exchange:
    """One request as the fake saw it: when it arrived, its body, when each chunk was sent."""

    received_at: float
    body: Body = field(default_factory=dict)
    number: int = 0  # 1 for the server's first request
    chunk_times: list[float] = field(default_factory=list)
    first_byte_at: float | None = None


class FakeOpenAI:
    def __init__(self, script: list[Reply]) -> None:
        self.script = list(script)
        self.requests: list[Body] = []
        self.exchanges: list[Exchange] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def _next(self, exchange: Exchange) -> Reply:
        with self._lock:
            self.requests.append(exchange.body)
            self.exchanges.append(exchange)
            exchange.number = len(self.exchanges)
            return self.script.pop(0) if len(self.script) > 1 else self.script[0]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            # Small writes go out at once: Nagle's algorithm would hold a chunk back for the
            # client's delayed ACK and add tens of milliseconds to what the tests measure.
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                exchange = Exchange(received_at=time.perf_counter())
                length = int(self.headers.get("content-length", 0))
                exchange.body = json.loads(self.rfile.read(length) or b"{}")
                reply = fake._next(exchange)
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                try:
                    if reply.fault is not None:
                        self._fault(reply, exchange, reply.fault)
                    elif reply.raw is not None:
                        kind = "text/event-stream" if exchange.body.get("stream") else None
                        data = reply.raw if isinstance(reply.raw, bytes) else reply.raw.encode()
                        self._send(reply, exchange, data, kind)
                    elif reply.status != 200:
                        error = {"message": "scripted failure", "type": "server_error"}
                        self._send(reply, exchange, json.dumps({"error": error}).encode())
                    elif exchange.body.get("stream"):
                        self._stream(reply, exchange)
                    else:
                        self._send(
                            reply, exchange, json.dumps(_completion(reply, exchange)).encode()
                        )
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (its deadline passed): nothing left to answer

            def _send(
                self, reply: Reply, exchange: Exchange, data: bytes, kind: str | None = None
            ) -> None:
                self.send_response(reply.status)
                self.send_header("content-type", kind or "application/json")
                self.send_header("content-length", str(len(data)))
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                exchange.first_byte_at = time.perf_counter()
                self.wfile.write(data)

            def _stream(self, reply: Reply, exchange: Exchange) -> None:
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("cache-control", "no-cache")
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                exchange.first_byte_at = time.perf_counter()
                for i, chunk in enumerate(_chunks(reply, exchange)):
                    if i and reply.chunk_delay_s:
                        time.sleep(reply.chunk_delay_s)
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                    exchange.chunk_times.append(time.perf_counter())
                self.wfile.write(b"data: [DONE]\n\n")

            def _fault(self, reply: Reply, exchange: Exchange, fault: Fault) -> None:
                streamed = bool(exchange.body.get("stream"))
                if streamed:
                    events = [
                        f"data: {json.dumps(chunk)}\n\n".encode()
                        for chunk in _chunks(reply, exchange)
                    ] + [b"data: [DONE]\n\n"]
                    # The stream starts well: the first piece of text goes out before the fault.
                    good, rest = events[:1], events[1:]
                    bad = {
                        "not-utf8": [
                            b'data: {"choices": [{"index": 0, "delta": {"content": "'
                            + BAD_BYTES
                            + b'"}}]}\n\n'
                        ],
                        "wrong-shape": [b'data: {"choices": "not a list"}\n\n'],
                        "wrong-types": [*rest[:-2], _wrong_usage_chunk(), rest[-1]],
                        "cut": [rest[0][: len(rest[0]) // 2]],
                    }[fault]
                    data = b"".join(good + bad)
                    kind = "text/event-stream"
                else:
                    whole = json.dumps(_completion(reply, exchange)).encode()
                    data = {
                        "not-utf8": whole.replace(b'"content": "', b'"content": "' + BAD_BYTES, 1),
                        "wrong-shape": b'{"choices": {"message": "not a list"}}',
                        "wrong-types": whole.replace(
                            json.dumps(_usage(reply)).encode(), json.dumps(WRONG_USAGE).encode()
                        ),
                        "cut": whole,
                    }[fault]
                    kind = "application/json"
                self.send_response(200)
                self.send_header("content-type", kind)
                if not streamed:
                    # A cut body is announced at its full length, then stops half-way.
                    self.send_header("content-length", str(len(data)))
                self.end_headers()
                exchange.first_byte_at = time.perf_counter()
                self.wfile.write(
                    data[: len(data) // 2] if fault == "cut" and not streamed else data
                )
                self.wfile.flush()
                if fault == "cut":
                    self.close_connection = True

        return Handler

    def start(self) -> FakeOpenAI:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _content(reply: Reply, body: Body) -> str | None:
    return reply.content(body) if callable(reply.content) else reply.content


def _calls(reply: Reply, body: Body) -> list[Call]:
    calls = reply.tool_calls(body) if callable(reply.tool_calls) else reply.tool_calls
    return list(calls or [])


def _usage(reply: Reply) -> dict[str, int]:
    prompt, completion = reply.usage
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


WRONG_USAGE = {"prompt_tokens": "many", "completion_tokens": [5], "total_tokens": None}


def _wrong_usage_chunk() -> bytes:
    return f"data: {json.dumps({'choices': [], 'usage': WRONG_USAGE})}\n\n".encode()


def _envelope(exchange: Exchange, body: Body, obj: str) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{exchange.number}",
        "object": obj,
        "created": int(time.time()),
        "model": body.get("model", "fake"),
    }


def _completion(reply: Reply, exchange: Exchange) -> dict[str, Any]:
    body = exchange.body
    calls = _calls(reply, body)
    message: dict[str, Any] = {"role": "assistant", "content": _content(reply, body)}
    if calls:
        message["tool_calls"] = [
            {
                "id": call.id or f"call_{exchange.number}_{i}",
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments_text()},
            }
            for i, call in enumerate(calls)
        ]
    return {
        **_envelope(exchange, body, "chat.completion"),
        "choices": [
            {"index": 0, "message": message, "finish_reason": "tool_calls" if calls else "stop"}
        ],
        "usage": _usage(reply),
    }


def _chunks(reply: Reply, exchange: Exchange) -> Iterator[dict[str, Any]]:
    """The reply as `chat.completion.chunk` objects: role, text pieces, tool-call pieces (each
    call's arguments split in two), the finish reason, then usage when the request asks."""
    body = exchange.body
    head = _envelope(exchange, body, "chat.completion.chunk")

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    content = _content(reply, body)
    pieces = reply.chunks if reply.chunks is not None else re.findall(r"\s*\S+", content or "")
    calls = _calls(reply, body)
    first = True
    for piece in pieces:
        yield chunk({"role": "assistant", "content": piece} if first else {"content": piece})
        first = False
    for i, call in enumerate(calls):
        text = call.arguments_text()
        half = len(text) // 2
        start = {
            "index": i,
            "id": call.id or f"call_{exchange.number}_{i}",
            "type": "function",
            "function": {"name": call.name, "arguments": text[:half]},
        }
        yield chunk(
            {"role": "assistant", "tool_calls": [start]} if first else {"tool_calls": [start]}
        )
        first = False
        yield chunk({"tool_calls": [{"index": i, "function": {"arguments": text[half:]}}]})
    yield chunk({}, "tool_calls" if calls else "stop")
    if (body.get("stream_options") or {}).get("include_usage"):
        yield {**head, "choices": [], "usage": _usage(reply)}


@contextmanager
def fake_openai(script: list[Reply]) -> Iterator[FakeOpenAI]:
    server = FakeOpenAI(script).start()
    try:
        yield server
    finally:
        server.stop()
