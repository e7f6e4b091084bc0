"""Observability: GET /metrics (every family, counts that move by what happened, route templates,
no PII), the metrics scope, multiprocess mode, JSON log lines and OpenTelemetry node spans."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from fake_openai import Reply, fake_openai
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import delete

from agents.decide.run import DecideRequest, decide
from agents.llm.breaker import CircuitBreaker
from agents.llm.client import LLMClient
from agents.llm.errors import CircuitOpen, UpstreamError, WriterError
from agents.llm.retry import RetryPolicy
from agents.metrics import Metrics, degraded_kind
from agents.services import Services
from agents.settings import Settings
from agents.tracing import build_tracer
from agents.writing.writer import Brief, Draft
from api.app import create_app
from api.cli_logging import json_formatter
from store.access import KeyRefused, create_key
from store.models import JobRow
from store.schemas import Channel

ROOT = Path(__file__).resolve().parents[1]
# Users whose consent lets a model write their copy (so a failing model is a fallback).
CONSENTING = [
    u["user_id"]
    for u in map(json.loads, (ROOT / "data" / "demo" / "users.jsonl").read_text().splitlines())
    if u["consent"].get("llm_processing") and u["consent"].get("personalization")
]
DECISION_NODES = [
    "guard_input",
    "profile",
    "retrieve",
    "policy",
    "select_offer",
    "generate",
    "guard_output",
    "explain",
    "log",
]


@pytest.fixture(scope="module")
def services(demo_services: Services) -> Services:
    # No job runner in this app: the queue-depth test's rows must stay as it wrote them, not be
    # claimed (and failed) by a runner between the write and the scrape.
    return replace(
        demo_services, settings=demo_services.settings.model_copy(update={"jobs_in_api": False})
    )


@pytest.fixture(scope="module")
def client(services: Services) -> Iterator[TestClient]:
    with TestClient(create_app(services=lambda: services)) as test_client:
        yield test_client


def scrape(client: TestClient) -> str:
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


def value(text: str, sample: str, **labels: str) -> float:
    """The value of one sample (`attune_decisions_total`, …) with exactly these labels; 0 if absent."""
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == sample and found.labels == labels:
                return found.value
    return 0.0


def families(text: str) -> set[str]:
    return {family.name for family in text_string_to_metric_families(text)}


def _decide(client: TestClient, **body: object) -> dict:
    response = client.post("/v1/decide", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def test_request_latency_is_labelled_by_route_template_and_status_class(
    client: TestClient,
) -> None:
    count = "attune_http_request_duration_seconds_count"
    user = {"method": "GET", "route": "/v1/users/{user_id}", "status": "2xx"}
    missing = {"method": "GET", "route": "/v1/users/{user_id}", "status": "4xx"}
    nowhere = {"method": "GET", "route": "(no route)", "status": "4xx"}
    before = scrape(client)
    assert client.get("/v1/users/u_0003").status_code == 200
    assert client.get("/v1/users/u_0003").status_code == 200
    assert client.get("/v1/users/nobody_at_all").status_code == 404
    assert client.get("/no/such/path/u_0003").status_code == 404
    after = scrape(client)
    assert value(after, count, **user) == value(before, count, **user) + 2
    assert value(after, count, **missing) == value(before, count, **missing) + 1
    assert value(after, count, **nowhere) == value(before, count, **nowhere) + 1
    # A histogram: the +Inf bucket holds every request of the series.
    bucket = value(after, "attune_http_request_duration_seconds_bucket", **user, le="+Inf")
    assert bucket == value(after, count, **user)
    for raw in ("u_0003", "nobody_at_all", "/no/such/path"):
        assert raw not in after


def test_a_made_up_method_is_labelled_other(client: TestClient) -> None:
    before = scrape(client)
    client.request("BREW", "/healthz")
    labels = {"method": "other", "route": "/healthz", "status": "4xx"}
    after = scrape(client)
    assert "BREW" not in after
    count = "attune_http_request_duration_seconds_count"
    assert value(after, count, **labels) == value(before, count, **labels) + 1


def test_decisions_are_counted_by_channel_and_writer(client: TestClient) -> None:
    requests = [
        {"channel": "email", "user_id": "u_0006"},
        {"channel": "email", "anonymous_id": "anon-metrics-1"},  # no consent: no copy
        {"channel": "web", "user_id": "u_0006"},
    ]
    before = scrape(client)
    expected: dict[tuple[str, str], int] = {}
    for body in requests:
        decision = _decide(client, **body)
        logged = client.get(f"/v1/decisions/{decision['decision_id']}").json()
        writer = logged["record"]["versions"]["writer"]
        expected[(body["channel"], writer)] = expected.get((body["channel"], writer), 0) + 1
    after = scrape(client)
    assert {writer for _, writer in expected} <= {"offline", "none"}
    for (channel, writer), count in expected.items():
        labels = {"channel": channel, "writer": writer}
        assert value(after, "attune_decisions_total", **labels) == (
            value(before, "attune_decisions_total", **labels) + count
        )


class FailingWriter:
    """A model writer whose server is down: every draft fails."""

    name = "openai"
    prompt_version = "failing-1"

    def write(self, brief: Brief, feedback: str | None = None) -> Draft:
        raise WriterError("the model server answered 503 after 3 attempt(s)")


def test_a_writer_fallback_is_counted_by_its_kind(services: Services) -> None:
    failing = replace(services, writer=FailingWriter())
    with TestClient(create_app(services=lambda: failing)) as client:
        before = scrape(client)
        decision = _decide(client, channel="web", user_id=CONSENTING[-1])
        after = scrape(client)
    assert any(entry.startswith("writer:") for entry in decision["degraded"])
    kind = {"journey": "decide", "kind": "writer"}
    assert value(after, "attune_fallbacks_total", **kind) == (
        value(before, "attune_fallbacks_total", **kind) + 1
    )
    # The decision fell back to the offline writer, and is counted under it.
    offline = {"channel": "web", "writer": "offline"}
    assert value(after, "attune_decisions_total", **offline) == (
        value(before, "attune_decisions_total", **offline) + 1
    )
    assert "503" not in after.split("attune_fallbacks_total", 1)[1].split("\n", 1)[0]


def test_a_chat_fallback_is_counted_under_the_chat_journey(client: TestClient) -> None:
    before = scrape(client)
    response = client.post(
        "/v1/chat", json={"user_id": "u_0013", "message": "a teapot please", "stream": False}
    )
    assert response.status_code == 200, response.text
    kinds = [entry.split(":", 1)[0] for entry in response.json()["degraded"]]
    assert kinds  # no model server here: the offline plan answers, labelled
    after = scrape(client)
    for kind in set(kinds):
        labels = {"journey": "chat", "kind": kind}
        assert value(after, "attune_fallbacks_total", **labels) == (
            value(before, "attune_fallbacks_total", **labels) + kinds.count(kind)
        )


@pytest.mark.parametrize(
    ("entry", "kind"),
    [
        ("writer: openai failed (timeout); used the offline writer", "writer"),
        ("vectors: the index holds 3 of 5 stored items", "vectors"),
        ("embedder: model missing; hashing fallback", "embedder"),
        ("content: withheld", "content"),
        ("no colon at all, free text", "other"),
        ("Ada Lovelace <ada@example.com>: hi", "other"),
        ("ada@example.com: hi", "other"),
        ("", "other"),
    ],
)
def test_the_kind_of_a_fallback_is_a_word_never_free_text(entry: str, kind: str) -> None:
    assert degraded_kind(entry) == kind


def test_rewards_are_counted_and_summed_by_policy(client: TestClient) -> None:
    # A visitor of its own: a demo user may have met their offers' frequency caps in the
    # session's earlier decisions, and then gets no offer to reward.
    decision = _decide(client, channel="web", anonymous_id="metrics-rewarded-visitor")
    assert decision["offer"] is not None, decision["explanation"]
    policy = decision["offer"]["policy"]
    before = scrape(client)
    response = client.post(
        "/v1/feedback", json={"decision_id": decision["decision_id"], "reward": 0.75}
    )
    assert response.status_code == 200, response.text
    # A refused second reward is not counted.
    assert (
        client.post(
            "/v1/feedback", json={"decision_id": decision["decision_id"], "reward": 1}
        ).status_code
        == 409
    )
    after = scrape(client)
    assert value(after, "attune_bandit_rewards_count", policy=policy) == (
        value(before, "attune_bandit_rewards_count", policy=policy) + 1
    )
    assert value(after, "attune_bandit_rewards_sum", policy=policy) == pytest.approx(
        value(before, "attune_bandit_rewards_sum", policy=policy) + 0.75
    )


def test_events_are_counted_by_outcome(client: TestClient) -> None:
    token = uuid.uuid4().hex[:8]
    batch = [
        {
            "event_id": f"m_{token}_1",
            "type": "view",
            "ts": "2026-11-01T10:00:00Z",
            "user_id": "u_0005",
            "item_id": "itm_00001",
        },
        {"event_id": f"m_{token}_2", "type": "teleport", "user_id": "u_0005"},
    ]
    before = scrape(client)
    assert client.post("/v1/events", json={"events": batch}).status_code == 200
    assert client.post("/v1/events", json={"events": batch[:1]}).status_code == 200
    after = scrape(client)
    for outcome, moved in (("accepted", 1), ("duplicate", 1), ("rejected", 1)):
        assert value(after, "attune_events_total", outcome=outcome) == (
            value(before, "attune_events_total", outcome=outcome) + moved
        )


def test_copy_job_queue_depth_is_read_from_the_store(
    client: TestClient, services: Services
) -> None:
    before = scrape(client)
    ids = [f"metrics{uuid.uuid4().hex[:16]}" for _ in range(3)]
    with services.db.session() as session:
        for job_id, status in zip(ids, ("queued", "queued", "running"), strict=True):
            session.add(
                JobRow(job_id=job_id, kind="copy", status=status, request={}, created_by="test")
            )
    try:
        after = scrape(client)
    finally:
        with services.db.session() as session:
            session.execute(delete(JobRow).where(JobRow.job_id.in_(ids)))
    for state, added in (("queued", 2), ("running", 1)):
        assert value(after, "attune_copy_jobs", state=state) == (
            value(before, "attune_copy_jobs", state=state) + added
        )
    assert value(scrape(client), "attune_copy_jobs", state="queued") == value(
        before, "attune_copy_jobs", state="queued"
    )


def test_llm_calls_tokens_errors_and_the_breaker_state(services: Services) -> None:
    script = [Reply(content="fine", usage=(12, 4)), Reply(status=500)]
    with fake_openai(script) as server:
        llm = LLMClient(
            base_url=server.base_url,
            api_key="test",
            model="fake-model",
            retry=RetryPolicy(max_retries=0),
            breaker=CircuitBreaker(failures=1, cooldown_s=600),
            metrics=services.metrics,
        )
        with_llm = replace(services, llm=llm)
        with TestClient(create_app(services=lambda: with_llm)) as client:
            before = scrape(client)
            assert value(before, "attune_llm_circuit_breaker_state", state="closed") == 1
            llm.complete([{"role": "user", "content": "Hello"}])
            with pytest.raises(UpstreamError):
                llm.complete([{"role": "user", "content": "Hello"}])
            with pytest.raises(CircuitOpen):
                llm.complete([{"role": "user", "content": "Hello"}])
            after = scrape(client)

    def moved(sample: str, **labels: str) -> float:
        return value(after, sample, **labels) - value(before, sample, **labels)

    calls = "attune_llm_request_duration_seconds_count"
    assert moved(calls, operation="complete", outcome="ok") == 1
    assert moved(calls, operation="complete", outcome="error") == 2
    assert moved("attune_llm_tokens_total", type="prompt") == 12
    assert moved("attune_llm_tokens_total", type="completion") == 4
    assert moved("attune_llm_errors_total", kind="upstream") == 1
    assert moved("attune_llm_errors_total", kind="circuit_open") == 1
    assert value(after, "attune_llm_circuit_breaker_state", state="open") == 1
    assert value(after, "attune_llm_circuit_breaker_state", state="closed") == 0
    assert "Hello" not in after


def test_streamed_llm_calls_count_their_tokens() -> None:
    metrics = Metrics()
    with fake_openai([Reply(content="one two three", usage=(7, 3))]) as server:
        llm = LLMClient(base_url=server.base_url, api_key="t", model="m", metrics=metrics)
        events = list(llm.stream([{"role": "user", "content": "Hi"}]))
    assert events
    text = metrics.scrape().decode()
    assert value(text, "attune_llm_tokens_total", type="prompt") == 7
    assert value(text, "attune_llm_tokens_total", type="completion") == 3
    count = "attune_llm_request_duration_seconds_count"
    assert value(text, count, operation="stream", outcome="ok") == 1


def test_every_family_is_exposed(client: TestClient) -> None:
    _decide(client, channel="web", user_id="u_0009")
    text = scrape(client)
    assert {
        "attune_http_request_duration_seconds",
        "attune_decisions",
        "attune_fallbacks",
        "attune_llm_request_duration_seconds",
        "attune_llm_tokens",
        "attune_llm_errors",
        "attune_bandit_rewards",
        "attune_events",
        "attune_copy_jobs",
    } <= families(text)


def test_no_identifier_or_email_reaches_the_metrics(client: TestClient) -> None:
    email = "grace.hopper.metrics@example.com"
    anonymous = "anon.metrics@example.org"
    _decide(
        client,
        channel="web",
        user_id="u_0010",
        query=f"I'm Grace, write to {email}",
        context={"note": email},
    )
    _decide(client, channel="app", anonymous_id=anonymous)
    events = [
        {
            "event_id": email,
            "type": "view",
            "ts": "2026-11-01T10:00:00Z",
            "anonymous_id": anonymous,
            "item_id": "itm_00001",
        },
        {"event_id": f"x-{email}", "type": "nonsense", "user_id": "u_0010"},
    ]
    assert client.post("/v1/events", json={"events": events}).status_code == 200
    client.get("/v1/users/u_0010")
    text = scrape(client)
    for secret in ("u_0010", email, anonymous, "Grace", "example.com", "example.org"):
        assert secret not in text


def test_metrics_need_the_metrics_or_admin_scope(services: Services) -> None:
    secured = replace(services, settings=services.settings.model_copy(update={"auth": "keys"}))
    with services.db.session() as session:
        scraper, _ = create_key(session, name="scraper", scopes=["metrics"])
        admin, _ = create_key(session, name="metrics-admin", scopes=["admin"])
        decider, _ = create_key(session, name="decider", scopes=["decide", "events"])
        with pytest.raises(KeyRefused):
            create_key(session, name="bound", scopes=["metrics"], subject_user_id="u_0001")
    with TestClient(create_app(services=lambda: secured)) as client:
        assert client.get("/metrics").status_code == 401
        denied = client.get("/metrics", headers={"Authorization": f"Bearer {decider}"})
        assert denied.status_code == 403 and "metrics" in denied.json()["detail"]
        for key in (scraper, admin):
            allowed = client.get("/metrics", headers={"Authorization": f"Bearer {key}"})
            assert allowed.status_code == 200 and "attune_events" in allowed.text
        # The metrics scope reads /metrics and nothing else.
        other = client.get("/v1/users/u_0001", headers={"Authorization": f"Bearer {scraper}"})
        assert other.status_code == 403


def test_metrics_is_documented_in_openapi(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"]["/metrics"]["get"]
    assert "text/plain" in operation["responses"]["200"]["content"]


MULTIPROCESS_WORKER = """
import sys
from agents.metrics import Metrics
Metrics().events.labels(outcome="accepted").inc(int(sys.argv[1]))
"""
MULTIPROCESS_SCRAPE = """
from agents.metrics import Metrics
print(Metrics().scrape().decode())
"""


def test_multiprocess_mode_adds_up_every_worker(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)}

    def run(code: str, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-c", code, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        return done.stdout

    run(MULTIPROCESS_WORKER, "3")
    run(MULTIPROCESS_WORKER, "4")
    text = run(MULTIPROCESS_SCRAPE)
    assert value(text, "attune_events_total", outcome="accepted") == 7


def test_access_lines_as_json_name_the_route_template(client: TestClient) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(json_formatter())
    access = logging.getLogger("attune.access")
    access.addHandler(handler)
    previous = access.level
    access.setLevel(logging.INFO)
    try:
        assert client.get("/v1/users/u_0003").status_code == 200
    finally:
        access.removeHandler(handler)
        access.setLevel(previous)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 1
    line = lines[0]
    assert {"timestamp", "level", "logger", "message"} <= set(line)
    assert (line["level"], line["logger"]) == ("INFO", "attune.access")
    assert (line["method"], line["route"], line["status"]) == ("GET", "/v1/users/{user_id}", 200)
    assert isinstance(line["duration_ms"], float)
    assert "u_0003" not in stream.getvalue()


def test_attune_log_format_json_makes_every_line_json(tmp_path: Path) -> None:
    code = (
        "import logging\n"
        "from agents.settings import Settings\n"
        "from api.cli_logging import configure_logging\n"
        "configure_logging(Settings())\n"
        "logging.getLogger('attune').warning('one %s', 'line')\n"
        "logging.getLogger('uvicorn.error').info('started', extra={'color_message': 'x'})\n"
    )
    env = {**os.environ, "ATTUNE_LOG_FORMAT": "json", "ATTUNE_HOME": str(tmp_path)}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    assert [(entry["logger"], entry["message"]) for entry in lines] == [
        ("attune", "one line"),
        ("uvicorn.error", "started"),
    ]
    assert all(entry["timestamp"] and entry["level"] for entry in lines)
    assert "color_message" not in done.stderr


def test_each_visited_node_is_a_span_of_one_trace(services: Services) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    traced = replace(services, tracer=provider.get_tracer("test"))
    decision = decide(
        traced,
        DecideRequest(
            channel=Channel.web, user_id="u_0011", query="a gift for ada@example.com", k=5
        ),
    )
    spans = exporter.get_finished_spans()
    nodes = [span for span in spans if span.name != "decide"]
    (root,) = [span for span in spans if span.name == "decide"]
    assert [span.name for span in nodes] == DECISION_NODES
    assert {span.context.trace_id for span in spans} == {root.context.trace_id}
    assert all(
        span.parent is not None and span.parent.span_id == root.context.span_id for span in nodes
    )
    for span in nodes:
        assert span.attributes is not None
        assert span.attributes["attune.node"] == span.name
        assert span.attributes["attune.channel"] == "web"
        assert span.attributes["attune.decision_id"] == decision.decision_id
    values = [str(v) for span in spans for v in (span.attributes or {}).values()]
    for secret in ("u_0011", "ada@", decision.subject_key):
        assert not any(secret in v for v in values)


def test_a_fallback_kind_is_a_span_attribute(services: Services) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    failing = replace(services, writer=FailingWriter(), tracer=provider.get_tracer("test"))
    decide(failing, DecideRequest(channel=Channel.web, user_id=CONSENTING[-2]))
    (generate,) = [span for span in exporter.get_finished_spans() if span.name == "generate"]
    assert generate.attributes is not None
    assert tuple(generate.attributes["attune.degraded"]) == ("writer",)


class BrokenWriter(FailingWriter):
    """A writer with a bug: the error is not a model failure, and its message quotes data."""

    def write(self, brief: Brief, feedback: str | None = None) -> Draft:
        raise RuntimeError("could not write for ada.lovelace@example.com")


def test_a_failing_node_records_the_error_type_only(services: Services) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    broken = replace(services, writer=BrokenWriter(), tracer=provider.get_tracer("test"))
    with pytest.raises(RuntimeError):
        decide(broken, DecideRequest(channel=Channel.web, user_id=CONSENTING[-3]))
    spans = {span.name: span for span in exporter.get_finished_spans()}
    for name in ("generate", "decide"):
        assert spans[name].status.status_code is StatusCode.ERROR
        assert spans[name].status.description == "RuntimeError"
        assert not spans[name].events  # no exception event with its message
    assert "explain" not in spans


def test_tracing_is_off_by_default_and_console_when_asked() -> None:
    assert build_tracer(Settings()) is None
    assert build_tracer(Settings(otel_exporter="console")) is not None
