"""Prometheus metrics of one process: the families, how the service records them, and the scrape.

Every label comes from a fixed vocabulary: route templates, channel and status enums, writer and
policy names, the kind before the ':' of a `degraded` entry, error classes. Nothing a caller
sends (a user id, an anonymous id, free text) ever becomes a label value, so the scrape holds no
PII.

The factory builds one `Metrics` per process, on a registry of its own (so that tests can build
several services side by side). With several uvicorn workers, set `PROMETHEUS_MULTIPROC_DIR` to
an empty folder before the workers start: prometheus_client then keeps each process's counts in
that folder, and a scrape of any worker adds up all of them. Without it, each worker answers for
itself. The values read at scrape time (copy jobs, the circuit breaker) are the scraping
worker's reading: the job counts come from the shared database, the breaker is per process.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Summary,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

__all__ = [
    "CONTENT_TYPE",
    "LLMCall",
    "Metrics",
    "Readings",
    "degraded_kind",
    "http_method",
    "status_class",
]

CONTENT_TYPE = CONTENT_TYPE_LATEST
BREAKER_STATES = ("closed", "half-open", "open")
JOB_STATES = ("queued", "running")
# Seconds; from a cached decision to an LLM-written one on a busy machine.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_KIND = re.compile(r"[a-z][a-z0-9_-]{0,31}")


def http_method(method: str) -> str:
    """The method as a label: the standard ones, `other` for any token a client makes up."""
    return method if method in HTTP_METHODS else "other"


def status_class(status: int) -> str:
    """`2xx`, `4xx`, …: the label of an HTTP status."""
    return f"{status // 100}xx"


def degraded_kind(entry: str) -> str:
    """The kind of a `degraded` entry, the word before its ':' (`writer`, `vectors`, …); `other`
    for anything that does not look like one, so free text never becomes a label."""
    head = entry.split(":", 1)[0].strip().lower()
    return head if ":" in entry and _KIND.fullmatch(head) else "other"


class Metrics:
    """The metric families of one process, on their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.http_latency = Histogram(
            "attune_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template and status class.",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.decisions = Counter(
            "attune_decisions",
            "Decisions made, by channel and the writer of their copy (offline, openai, none).",
            ["channel", "writer"],
            registry=r,
        )
        self.fallbacks = Counter(
            "attune_fallbacks",
            "Fallbacks taken (entries of `degraded`), by journey and kind.",
            ["journey", "kind"],
            registry=r,
        )
        self.llm_latency = Histogram(
            "attune_llm_request_duration_seconds",
            "Time of a call to the model server, retries included, by operation and outcome.",
            ["operation", "outcome"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.llm_tokens = Counter(
            "attune_llm_tokens",
            "Tokens the model server reported, by type (prompt, completion).",
            ["type"],
            registry=r,
        )
        self.llm_errors = Counter(
            "attune_llm_errors",
            "Failed calls to the model server, by kind (upstream, deadline, malformed, "
            "circuit_open).",
            ["kind"],
            registry=r,
        )
        self.rewards = Summary(
            "attune_bandit_rewards",
            "Rewards given to decisions (count and sum), by bandit policy.",
            ["policy"],
            registry=r,
        )
        self.events = Counter(
            "attune_events",
            "Behavioural events received, by outcome (accepted, duplicate, rejected).",
            ["outcome"],
            registry=r,
        )

        # Drift monitors (agents.drift): label values are monitor kinds, feature names, channels,
        # experiment arms and catalog measures, never anything a caller sent.
        self.drift_statistic = Gauge(
            "attune_drift_statistic",
            "The latest drift check's statistic, by monitor and feature or group (PSI, change).",
            ["monitor", "name"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.drift_breached = Gauge(
            "attune_drift_breached",
            "1 when the latest drift check found a monitor of this kind above its threshold.",
            ["monitor"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.drift_retrains = Counter(
            "attune_drift_retrains", "Trainings a drift check triggered.", registry=r
        )

    def decision(self, *, channel: str, writer: str, degraded: Iterable[str]) -> None:
        self.decisions.labels(channel=channel, writer=writer).inc()
        self.fallback("decide", degraded)

    def fallback(self, journey: str, degraded: Iterable[str]) -> None:
        for entry in degraded:
            self.fallbacks.labels(journey=journey, kind=degraded_kind(entry)).inc()

    @contextmanager
    def llm_call(self, operation: str) -> Iterator[LLMCall]:
        """Time one call to the model server; the caller reports its tokens or its error."""
        call = LLMCall()
        started = time.perf_counter()
        try:
            yield call
        finally:
            outcome = "error" if call.error else "ok"
            self.llm_latency.labels(operation=operation, outcome=outcome).observe(
                time.perf_counter() - started
            )
            if call.error:
                self.llm_errors.labels(kind=call.error).inc()
            self.llm_tokens.labels(type="prompt").inc(call.prompt_tokens)
            self.llm_tokens.labels(type="completion").inc(call.completion_tokens)

    def scrape(self, *readings: Collector) -> bytes:
        """The exposition of this process (or of all, in multiprocess mode) and of `readings`,
        collectors read now."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
            sources: list[Collector] = [registry, *readings]
        else:
            sources = [self.registry, *readings]
        return generate_latest(_Chain(sources))


@dataclass
class LLMCall:
    """What one call to the model server reports to its `Metrics.llm_call`."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None  # the kind, when the call failed


class Readings(Collector):
    """Gauges read at scrape time: copy jobs by state, the circuit breaker's state."""

    def __init__(
        self,
        *,
        job_counts: Callable[[], dict[str, int]],
        breaker_state: Callable[[], str | None],
    ) -> None:
        self._job_counts = job_counts
        self._breaker_state = breaker_state

    def collect(self) -> Iterable[Metric]:
        jobs = GaugeMetricFamily(
            "attune_copy_jobs", "Copy jobs waiting or running, by state.", labels=["state"]
        )
        counts = self._job_counts()
        for state in JOB_STATES:
            jobs.add_metric([state], counts.get(state, 0))
        yield jobs
        current = self._breaker_state()
        if current is not None:  # no LLM configured: no breaker
            breaker = GaugeMetricFamily(
                "attune_llm_circuit_breaker_state",
                "1 for the state the model server's circuit breaker is in (this process).",
                labels=["state"],
            )
            for name in BREAKER_STATES:
                breaker.add_metric([name], 1.0 if name == current else 0.0)
            yield breaker


class _Chain:
    """Several collectors read as one, for `generate_latest`."""

    def __init__(self, sources: list[Collector]) -> None:
        self._sources = sources

    def collect(self) -> Iterator[Metric]:
        for source in self._sources:
            yield from source.collect()
