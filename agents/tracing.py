"""OpenTelemetry spans for the decision graph: one per step run, under one span per decision.

Off unless `ATTUNE_OTEL_EXPORTER` names an exporter (`console`, or `otlp` to the standard
`OTEL_EXPORTER_OTLP_ENDPOINT`). The tracer has a provider of its own, built by the factory, so
nothing global is set and a test can hand the services an in-memory one. Span attributes come
from a fixed vocabulary (step name, channel, decision id, the kinds of fallbacks taken), never
from the request: no user id, anonymous id or free text is ever recorded.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from langgraph.runtime import Runtime
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
)
from opentelemetry.trace import Span, Status, StatusCode, Tracer

from agents.decide.state import DecideContext, DecideState
from agents.metrics import degraded_kind
from agents.settings import Settings

__all__ = ["Node", "build_tracer", "decision_span", "traced"]


class Node(Protocol):
    """A step of the decision graph, or one of its nodes: the state and runtime in, an update out."""

    def __call__(self, state: DecideState, runtime: Runtime[DecideContext]) -> dict[str, Any]: ...


def build_tracer(settings: Settings) -> Tracer | None:
    """The tracer the settings ask for; None when tracing is off."""
    if settings.otel_exporter == "none":
        return None
    provider = TracerProvider()
    if settings.otel_exporter == "console":
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    else:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError as error:
            raise RuntimeError(
                "ATTUNE_OTEL_EXPORTER=otlp needs the OTLP exporter: pip install 'attune[otlp]'"
            ) from error
        # The endpoint, headers and timeout come from the standard OTEL_EXPORTER_OTLP_* variables.
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider.get_tracer("attune")


@contextmanager
def decision_span(tracer: Tracer | None, *, channel: str, decision_id: str) -> Iterator[None]:
    """The span that holds one decision's step spans (nothing when tracing is off)."""
    if tracer is None:
        yield
        return
    attributes = {"attune.channel": channel, "attune.decision_id": decision_id}
    with _span(tracer, "decide", attributes):
        yield


def traced(name: str, node: Node) -> Node:
    """`node` (a step) in a span named `name` when the services have a tracer; as it is
    otherwise. The span's `attune.node` attribute is the step's name too (the name the graph's
    nodes had when each step was one)."""

    @functools.wraps(node)
    def run(state: DecideState, runtime: Runtime[DecideContext]) -> dict[str, Any]:
        ctx = runtime.context
        tracer = ctx.services.tracer
        if tracer is None:
            return node(state, runtime)
        attributes = {
            "attune.node": name,
            "attune.channel": ctx.run.channel.value,
            "attune.decision_id": ctx.decision_id,
        }
        with _span(tracer, name, attributes) as span:
            update = node(state, runtime)
            kinds = sorted({degraded_kind(entry) for entry in update.get("degraded", [])})
            if kinds:
                span.set_attribute("attune.degraded", kinds)
            return update

    return run


@contextmanager
def _span(tracer: Tracer, name: str, attributes: dict[str, str]) -> Iterator[Span]:
    """A span that, on an exception, records its type only: the SDK would record its message
    and stack, and a message may quote what failed to be written (a person's data)."""
    with tracer.start_as_current_span(
        name, attributes=attributes, record_exception=False, set_status_on_exception=False
    ) as span:
        try:
            yield span
        except BaseException as error:
            span.set_status(Status(StatusCode.ERROR, type(error).__name__))
            raise
