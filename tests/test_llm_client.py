"""The LLM client through real HTTP to a scripted server on 127.0.0.1: retries, deadlines, the
circuit breaker, streaming, structured output and usage."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest
from fake_openai import Call, Reply, fake_openai

from agents.decide.run import DecideRequest, decide
from agents.factory import build_llm, build_writer
from agents.llm.breaker import CircuitBreaker
from agents.llm.client import LLMClient
from agents.llm.completion import StreamEnd, TextDelta, ToolCallReady, Usage
from agents.llm.errors import (
    CircuitOpen,
    DeadlineExceeded,
    LLMError,
    MalformedReply,
    UpstreamError,
    WriterError,
)
from agents.llm.retry import RetryPolicy
from agents.services import Services
from agents.settings import Settings
from agents.writing.llm_writer import OpenAIWriter
from agents.writing.writer import Draft
from store.decisions import get_decision
from store.schemas import Channel

PROMPT = [{"role": "user", "content": "a secret prompt about Ada Lovelace"}]
MARGIN_S = 0.25  # what a deadline may overrun by on a busy 2-core machine


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def client(base_url: str, **options) -> LLMClient:
    options.setdefault("retry", RetryPolicy(max_retries=2, base_s=0.01, cap_s=0.05))
    return LLMClient(base_url=base_url, api_key="test", model="fake-model", **options)


def _safe(error: Exception) -> None:
    """An error message names no prompt text and nothing the server said."""
    message = str(error)
    assert "Ada" not in message and "secret" not in message
    assert "scripted failure" not in message


@pytest.mark.parametrize(
    "failure",
    [Reply(status=429, headers={"Retry-After": "0.05"}), Reply(status=500), Reply(status=503)],
)
def test_429_and_5xx_are_retried_then_succeed(failure: Reply) -> None:
    with fake_openai([failure, failure, Reply(content="fine")]) as server:
        started = time.monotonic()
        completion = client(server.base_url).complete(PROMPT)
        elapsed = time.monotonic() - started
    assert completion.text == "fine"
    assert len(server.requests) == 3
    if "Retry-After" in failure.headers:
        assert elapsed >= 0.1  # two waits of the server's 50 ms


def test_retries_are_bounded() -> None:
    with (
        fake_openai([Reply(status=500)]) as server,
        pytest.raises(UpstreamError, match="500 after 3 attempt") as caught,
    ):
        client(server.base_url).complete(PROMPT)
    assert len(server.requests) == 3  # one attempt and two retries: the SDK adds none
    assert caught.value.status == 500
    _safe(caught.value)


@pytest.mark.parametrize("status", [400, 401, 404, 422])
def test_a_client_error_is_not_retried(status: int) -> None:
    with (
        fake_openai([Reply(status=status), Reply(content="never")]) as server,
        pytest.raises(UpstreamError, match=f"refused the request: {status}") as caught,
    ):
        client(server.base_url).complete(PROMPT)
    assert len(server.requests) == 1
    _safe(caught.value)


def test_a_retry_after_beyond_the_deadline_gives_up_at_once() -> None:
    with fake_openai([Reply(status=429, headers={"Retry-After": "30"})]) as server:
        started = time.monotonic()
        with pytest.raises(UpstreamError, match="would pass the deadline"):
            client(server.base_url).complete(PROMPT, deadline=time.monotonic() + 2.0)
        assert time.monotonic() - started < 0.5
    assert len(server.requests) == 1


def test_a_slow_upstream_fails_within_the_deadline() -> None:
    with fake_openai([Reply(content="late", delay_s=2.0)]) as server:
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded) as caught:
            client(server.base_url).complete(PROMPT, deadline=started + 0.3)
        assert time.monotonic() - started < 0.3 + MARGIN_S
    assert len(server.requests) == 1
    _safe(caught.value)


def test_a_stalled_stream_fails_within_the_deadline() -> None:
    slow = Reply(content="one two three four", chunk_delay_s=1.0)
    with fake_openai([slow]) as server:
        started = time.monotonic()
        seen = []
        with pytest.raises(DeadlineExceeded):
            for event in client(server.base_url).stream(PROMPT, deadline=started + 0.4):
                seen.append(event)
        assert time.monotonic() - started < 0.4 + MARGIN_S
    assert seen == [TextDelta("one")]  # what arrived in time was handed out at once


def test_no_attempt_starts_after_the_deadline() -> None:
    with (
        fake_openai([Reply(content="never")]) as server,
        pytest.raises(DeadlineExceeded, match="no attempt started"),
    ):
        client(server.base_url).complete(PROMPT, deadline=time.monotonic() - 0.01)
    assert server.requests == []


def test_retries_stop_at_the_deadline() -> None:
    # Each 500 takes 150 ms to come: within 400 ms there is room for three attempts at most.
    with fake_openai([Reply(status=500, delay_s=0.15)]) as server:
        llm = client(server.base_url, retry=RetryPolicy(max_retries=10, base_s=0.01, cap_s=0.01))
        started = time.monotonic()
        with pytest.raises(LLMError):
            llm.complete(PROMPT, deadline=started + 0.4)
        assert time.monotonic() - started < 0.4 + MARGIN_S
    assert 2 <= len(server.requests) <= 3


def test_the_breaker_opens_fails_fast_and_half_opens_after_the_cooldown() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=3, cooldown_s=30, clock=clock)
    script = [Reply(status=500)] * 3 + [Reply(content="back")]
    with fake_openai(script) as server:
        llm = client(server.base_url, breaker=breaker, retry=RetryPolicy(max_retries=0))
        for _ in range(3):
            with pytest.raises(UpstreamError):
                llm.complete(PROMPT)
        assert breaker.state == "open"
        started = time.monotonic()
        with pytest.raises(CircuitOpen, match="3 consecutive failures") as caught:
            llm.complete(PROMPT)
        assert time.monotonic() - started < 0.05  # fails fast
        assert len(server.requests) == 3  # and sends nothing
        assert isinstance(caught.value, WriterError)  # the decide graph's fallback catches it
        clock.now += 31
        assert breaker.state == "half-open"
        assert llm.complete(PROMPT).text == "back"  # the probe succeeds: closed again
        assert breaker.state == "closed"
        assert len(server.requests) == 4


def test_a_failed_probe_opens_the_breaker_again() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=1, cooldown_s=10, clock=clock)
    with fake_openai([Reply(status=502)]) as server:
        llm = client(server.base_url, breaker=breaker, retry=RetryPolicy(max_retries=0))
        with pytest.raises(UpstreamError):
            llm.complete(PROMPT)
        clock.now += 11
        with pytest.raises(UpstreamError):  # the probe goes through, and fails
            llm.complete(PROMPT)
        with pytest.raises(CircuitOpen, match=r"next probe in 10\.0 s"):
            llm.complete(PROMPT)
    assert len(server.requests) == 2


def test_only_one_probe_at_a_time() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=1, cooldown_s=10, clock=clock)
    breaker.acquire()
    breaker.failure()
    clock.now += 11
    breaker.acquire()  # the probe
    with pytest.raises(CircuitOpen, match="probe is in flight"):
        breaker.acquire()
    breaker.success()
    breaker.acquire()
    assert breaker.state == "closed"


def test_a_client_error_does_not_count_against_the_server() -> None:
    breaker = CircuitBreaker(failures=2, cooldown_s=10)
    with fake_openai([Reply(status=400)]) as server:
        llm = client(server.base_url, breaker=breaker)
        for _ in range(3):
            with pytest.raises(UpstreamError):
                llm.complete(PROMPT)
    assert breaker.state == "closed"


def test_an_unreachable_server_is_an_error_and_a_failure() -> None:
    with fake_openai([Reply(content="x")]) as server:
        base_url = server.base_url
    breaker = CircuitBreaker(failures=1, cooldown_s=10)
    with pytest.raises(UpstreamError, match="cannot reach"):
        client(base_url, breaker=breaker).complete(PROMPT)
    assert breaker.state == "open"


def test_malformed_json_is_an_error_and_is_not_retried() -> None:
    with fake_openai([Reply(raw="{not json")]) as server, pytest.raises(MalformedReply) as caught:
        client(server.base_url).complete(PROMPT)
    assert len(server.requests) == 1
    _safe(caught.value)


@pytest.mark.parametrize(
    "raw",
    [
        'data: {"id": "x", "object": "chat.completion.chunk", "choices": [\n\n',  # bad JSON
        "data: [DONE]\n\n",  # ends before any finish reason
        "{not an event stream",
    ],
)
def test_a_malformed_stream_is_an_error(raw: str) -> None:
    breaker = CircuitBreaker(failures=1, cooldown_s=10)
    with fake_openai([Reply(raw=raw)]) as server, pytest.raises(MalformedReply) as caught:
        list(client(server.base_url, breaker=breaker).stream(PROMPT))
    assert len(server.requests) == 1
    assert breaker.state == "open"  # a server that streams garbage counts as failing
    _safe(caught.value)


def test_structured_output_from_a_pydantic_model() -> None:
    draft = {"text": "The teapot, €19.99.", "item_ids": ["itm_00001"], "offer_id": None}
    with fake_openai([Reply(content=json.dumps(draft)), Reply(content='{"text": 3}')]) as server:
        llm = client(server.base_url)
        completion = llm.complete(PROMPT, response_format=Draft)
        assert completion.parsed == Draft(**draft)
        with pytest.raises(MalformedReply, match="not a valid Draft"):
            llm.complete(PROMPT, response_format=Draft)
    sent = server.requests[0]["response_format"]
    assert sent["type"] == "json_schema"
    assert sent["json_schema"]["schema"] == Draft.model_json_schema()


def test_a_completion_carries_text_tool_calls_and_usage() -> None:
    calls = [Call("retrieve_items", {"query": "tea", "k": 3}, id="call_a")]
    with fake_openai([Reply(tool_calls=calls, usage=(120, 30))]) as server:
        completion = client(server.base_url).complete(PROMPT, tools=[{"type": "function"}])
    assert server.requests[0]["tools"] == [{"type": "function"}]
    (call,) = completion.tool_calls
    assert (call.id, call.name, json.loads(call.arguments)) == (
        "call_a",
        "retrieve_items",
        {"query": "tea", "k": 3},
    )
    assert completion.usage == Usage(
        prompt_tokens=120, completion_tokens=30, total_tokens=150, calls=1, model="fake-model"
    )


def test_streaming_assembles_text_and_tool_calls() -> None:
    calls = [
        Call("retrieve_items", {"query": "green tea", "k": 5}),
        Call("profile_summary", {}),
    ]
    reply = Reply(content="Let me look that up.", tool_calls=calls, usage=(40, 12))
    with fake_openai([reply]) as server:
        events = list(client(server.base_url).stream(PROMPT, tools=[{"type": "function"}]))
    body = server.requests[0]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    deltas = [e.text for e in events if isinstance(e, TextDelta)]
    assert deltas == ["Let", " me", " look", " that", " up."]
    ready = [e.call for e in events if isinstance(e, ToolCallReady)]
    assert [(c.name, json.loads(c.arguments)) for c in ready] == [
        ("retrieve_items", {"query": "green tea", "k": 5}),
        ("profile_summary", {}),
    ]
    end = events[-1]
    assert isinstance(end, StreamEnd)
    assert end.completion.text == "Let me look that up."
    assert end.completion.tool_calls == tuple(ready)
    assert end.completion.finish_reason == "tool_calls"
    assert end.completion.usage.total_tokens == 52


def test_a_stream_is_retried_only_before_its_first_event() -> None:
    with fake_openai([Reply(status=503), Reply(content="hello there")]) as server:
        events = list(client(server.base_url).stream(PROMPT))
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["hello", " there"]
    assert len(server.requests) == 2


def test_usage_is_summed() -> None:
    script = [Reply(content="a", usage=(10, 2)), Reply(content="b", usage=(7, 3))]
    with fake_openai(script) as server:
        llm = client(server.base_url)
        total = llm.complete(PROMPT).usage + llm.complete(PROMPT).usage
    assert total == Usage(
        prompt_tokens=17, completion_tokens=5, total_tokens=22, calls=2, model="fake-model"
    )


def test_the_factory_builds_one_client_from_the_settings() -> None:
    settings = Settings(
        openai_base_url="http://127.0.0.1:9/v1",
        openai_model="m",
        openai_timeout_s=3.0,
        openai_max_retries=4,
        openai_breaker_failures=7,
        openai_breaker_cooldown_s=12.0,
    )
    llm = build_llm(settings)
    assert llm is not None
    assert (llm.model, llm.timeout_s, llm.retry.max_retries) == ("m", 3.0, 4)
    assert (llm.breaker.threshold, llm.breaker.cooldown_s) == (7, 12.0)
    writer = build_writer(settings, llm)
    assert isinstance(writer, OpenAIWriter) and writer.client is llm  # one breaker per process
    assert build_llm(Settings()) is None


# A user of this module only: the decision below changes its frequency caps.
USER = "u_0100"


def _draft(body: dict) -> str:
    return json.dumps({"text": "Something nice for you.", "item_ids": [], "offer_id": None})


@pytest.fixture
def swap_writer(demo_services: Services) -> Callable[[OpenAIWriter], None]:
    original = demo_services.writer

    def swap(writer: OpenAIWriter) -> None:
        demo_services.writer = writer

    yield swap
    demo_services.writer = original


def test_a_decision_records_the_tokens_of_every_call(
    demo_services: Services, swap_writer: Callable[[OpenAIWriter], None]
) -> None:
    # The first draft invents a price and is retried once: two calls, summed.
    invented = json.dumps({"text": "All yours for €0.01!", "item_ids": [], "offer_id": None})
    script = [Reply(content=invented, usage=(100, 20)), Reply(content=_draft, usage=(130, 25))]
    with fake_openai(script) as server:
        swap_writer(OpenAIWriter(client(server.base_url)))
        decision = decide(demo_services, DecideRequest(channel=Channel.web, user_id=USER))
    with demo_services.db.session() as session:
        record = get_decision(session, decision.decision_id).record
    assert len(server.requests) == 2
    assert record["content"]["writer"] == "openai"
    assert record["usage"] == {
        "prompt_tokens": 230,
        "completion_tokens": 45,
        "total_tokens": 275,
        "calls": 2,
        "model": "fake-model",
    }
    assert record["versions"]["prompt"] == "decide-copy-1"
