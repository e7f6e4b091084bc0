"""Every step of a decision runs and is traced, whatever node of the graph runs it (issue 14):
the decision graph groups its nine steps into a few nodes, and a step that stopped running or
stopped appearing in the trace — the output guard on a model's copy above all — fails here."""

from __future__ import annotations

import json
import os
import threading
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from langgraph.runtime import Runtime
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agents.decide.graph import STEPS, build_decide_graph, steps
from agents.decide.run import DecideRequest, decide
from agents.services import Services
from agents.writing.writer import Brief, Draft, OfflineWriter
from retrieval.embedder import CachedEmbedder
from store.decisions import get_decision
from store.schemas import Channel

ROOT = Path(__file__).resolve().parents[1]
USERS = [json.loads(line) for line in (ROOT / "data/demo/users.jsonl").read_text().splitlines()]
# People whose consent lets a model write their web copy.
CONSENTING = [
    u["user_id"]
    for u in USERS
    if u["consent"].get("llm_processing") and u["consent"].get("personalization")
]
BEFORE_COPY = ["guard_input", "profile", "retrieve", "policy", "select_offer"]
AFTER_COPY = ["explain", "log"]


class ModelWriter(OfflineWriter):
    """A model writer (by name) whose first `bad` drafts break the output guard."""

    name = "fake-model"
    prompt_version = "fake-1"

    def __init__(self, bad: int = 0) -> None:
        self.bad = bad
        self.calls = 0

    def write(self, brief: Brief, *, feedback: str | None = None) -> Draft:
        self.calls += 1
        if self.calls <= self.bad:
            return Draft(text="Guaranteed cure, only $0.01 today!", item_ids=[], offer_id=None)
        return super().write(brief)


def traced_decision(
    services: Services, request: DecideRequest, writer: Any = None
) -> tuple[list[str], dict[str, Any]]:
    """The names of the decision's step spans, in order, and its logged record."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    changed = replace(services, tracer=provider.get_tracer("test"))
    if writer is not None:
        changed = replace(changed, writer=writer)
    decision = decide(changed, request)
    with services.db.session() as session:
        record = get_decision(session, decision.decision_id).record
    return [span.name for span in exporter.get_finished_spans() if span.name != "decide"], record


def test_the_graph_runs_the_nine_steps_in_order() -> None:
    assert [*BEFORE_COPY, "generate", "guard_output", *AFTER_COPY] == STEPS


def test_the_drawn_graph_keeps_the_copy_loop() -> None:
    """The copy nodes route themselves (a `Command` each): the edges they may take are declared,
    so the graph LangGraph draws is still the decision's, retry loop included."""
    edges = {(e.source, e.target) for e in build_decide_graph().get_graph().edges}
    assert edges == {
        ("__start__", "prepare"),
        ("prepare", "generate"),
        ("generate", "guard_output"),
        ("generate", "finish"),
        ("guard_output", "generate"),
        ("guard_output", "finish"),
        ("finish", "__end__"),
    }


def test_offline_copy_runs_and_traces_every_step(demo_services: Services) -> None:
    request = DecideRequest(channel=Channel.web, user_id=CONSENTING[0], query="cat toys")
    spans, record = traced_decision(demo_services, request)
    assert spans == STEPS
    assert record["content"]["writer"] == "offline"
    assert record["content"]["attempts"] == 1


def test_a_models_copy_is_guarded(demo_services: Services) -> None:
    model = ModelWriter()
    request = DecideRequest(channel=Channel.web, user_id=CONSENTING[1])
    spans, record = traced_decision(demo_services, request, model)
    assert spans == [*BEFORE_COPY, "generate", "guard_output", *AFTER_COPY]
    assert model.calls == 1
    assert record["content"]["writer"] == "fake-model"
    assert record["content"]["attempts"] == 1


def test_a_rejected_draft_is_rewritten_and_guarded_again(demo_services: Services) -> None:
    model = ModelWriter(bad=1)
    request = DecideRequest(channel=Channel.web, user_id=CONSENTING[2])
    spans, record = traced_decision(demo_services, request, model)
    copy = ["generate", "guard_output"] * 2
    assert spans == [*BEFORE_COPY, *copy, *AFTER_COPY]
    assert model.calls == 2
    assert record["content"]["writer"] == "fake-model"
    assert record["content"]["attempts"] == 2


def test_no_copy_allowed_skips_only_the_guard(demo_services: Services) -> None:
    # An anonymous person has given no consent: email copy may not be written.
    request = DecideRequest(channel=Channel.email, anonymous_id="anon-steps")
    spans, record = traced_decision(demo_services, request)
    assert spans == [*BEFORE_COPY, "generate", *AFTER_COPY]
    assert record["content"]["writer"] == "none"


def test_a_node_of_steps_passes_each_step_the_updates_before_it() -> None:
    seen: list[dict[str, Any]] = []

    def first(state: Any, runtime: Any) -> dict[str, Any]:
        seen.append(dict(state))
        return {"profile": "p", "degraded": ["a: first"]}

    def second(state: Any, runtime: Any) -> dict[str, Any]:
        seen.append(dict(state))
        return {"candidates": "c", "degraded": ["b: second"]}

    def third(state: Any, runtime: Any) -> dict[str, Any]:
        seen.append(dict(state))
        return {"profile": "q"}

    node = steps(("first", first), ("second", second), ("third", third))
    runtime = Runtime(context=SimpleNamespace(services=SimpleNamespace(tracer=None)))
    update = node({"k": 3, "degraded": ["z: before"]}, runtime)  # type: ignore[arg-type]

    assert seen[0] == {"k": 3, "degraded": ["z: before"]}
    assert seen[1] == {"k": 3, "profile": "p", "degraded": ["z: before", "a: first"]}
    assert seen[2]["degraded"] == ["z: before", "a: first", "b: second"]
    # What the graph merges: the last value of each key, and only the steps' own fallbacks
    # (the reducer adds them to the state's).
    assert update == {"profile": "q", "candidates": "c", "degraded": ["a: first", "b: second"]}


def test_a_decision_sizes_langgraphs_thread_pool_without_asking_the_os(
    demo_services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LangGraph builds a thread pool on every invoke, which no node of this graph runs on; the
    run's config sizes it (`run_config`), so a decision does not read the CPU count from the OS."""
    asked: list[int] = []
    count = os.cpu_count
    monkeypatch.setattr(os, "cpu_count", lambda: asked.append(1) or count())
    decision = decide(demo_services, DecideRequest(channel=Channel.web, user_id=CONSENTING[3]))
    assert decision.items
    assert asked == []


class ThreadsOf:
    """The service's own embedder, recording which thread embedded which query text."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name, self.dim, self.degraded = inner.name, inner.dim, inner.degraded
        self.calls: list[tuple[str, str]] = []

    def embed(self, texts: Any) -> Any:
        return self.inner.embed(texts)

    def embed_query(self, text: str) -> Any:
        self.calls.append((text, threading.current_thread().name))
        return self.inner.embed_query(text)


class Outcomes(CachedEmbedder):
    """The query cache, recording what became of each vector begun ahead: kept or dropped."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.outcomes: list[tuple[str, str]] = []

    def embed_ahead(self, text: str) -> Any:
        ahead = super().embed_ahead(text)
        if ahead is None:
            return None
        outcomes = self.outcomes

        class Recorded:  # the first of keep and drop decides; the other does nothing after it
            decided = False

            def keep(self) -> None:
                self._record("kept")
                ahead.keep()

            def drop(self) -> None:
                self._record("dropped")
                ahead.drop()

            def _record(self, outcome: str) -> None:
                if not self.decided:
                    outcomes.append((text, outcome))
                    self.decided = True

        return Recorded()


def _embedding(services: Services) -> tuple[Services, ThreadsOf, Outcomes]:
    spy = ThreadsOf(services.tools.embedder.inner)
    cache = Outcomes(spy)
    return replace(services, tools=replace(services.tools, embedder=cache)), spy, cache


def test_a_clean_new_querys_vector_is_begun_ahead_and_used(demo_services: Services) -> None:
    """The query's vector is begun before the PII scan, kept when the scan finds nothing, and
    used by retrieval: the model runs once for the query."""
    services, spy, cache = _embedding(demo_services)
    query = "a warm wool hat for hiking"
    decide(services, DecideRequest(Channel.web, user_id=CONSENTING[0], query=query))

    assert cache.outcomes == [(query, "kept")]
    assert [text for text, _ in spy.calls] == [query]
    assert query in cache


def test_a_query_holding_pii_is_never_cached_and_retrieval_reads_the_redacted_text(
    demo_services: Services,
) -> None:
    """The vector begun on the text as sent is thrown away when the guard finds PII in it:
    retrieval embeds the pseudonymized text, and the raw one is not kept in the cache."""
    services, spy, cache = _embedding(demo_services)
    query = "a gift to send to jo.bloggs@example.org"
    decide(services, DecideRequest(Channel.web, user_id=CONSENTING[0], query=query))

    assert cache.outcomes == [(query, "dropped")]
    used = [text for text, thread in spy.calls if not thread.startswith("attune-embed-ahead")]
    assert used == ["a gift to send to <EMAIL_ADDRESS_1>"]
    assert used[0] in cache
    assert query not in cache


def test_a_failed_decision_drops_the_vector_begun_ahead(demo_services: Services) -> None:
    class BrokenGuard:
        def __getattr__(self, name: str) -> Any:
            return getattr(demo_services.pii, name)

        def pseudonymize(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("the guard broke")

    services, _, cache = _embedding(demo_services)
    services = replace(services, pii=BrokenGuard())
    query = "a warm wool hat for the coast"
    with pytest.raises(RuntimeError, match="the guard broke"):
        decide(services, DecideRequest(Channel.web, user_id=CONSENTING[0], query=query))

    assert cache.outcomes == [(query, "dropped")]
    assert query not in cache


def test_a_decision_or_chat_turn_about_nobody_is_refused_naming_user_id(
    demo_services: Services,
) -> None:
    from agents.chat.turn import ChatRequest, chat_turn

    with pytest.raises(ValueError, match=r"^user_id: one of user_id or anonymous_id is required"):
        decide(demo_services, DecideRequest(channel=Channel.web))
    with pytest.raises(ValueError, match=r"^user_id: one of user_id or anonymous_id is required"):
        chat_turn(demo_services, ChatRequest(message="hello"))
