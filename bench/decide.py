"""Decision latency in process on the demo world, beside the floor of LangGraph itself.

The floor is a graph of the decision's nine steps as nine nodes — the shape issue 14 defines:
the same edges, conditional edges, state schema and context — whose nodes do nothing. Beside it,
labelled `noop_langgraph_floor_service_shape`, the floor of the shape the service runs (the
steps grouped into fewer nodes, `agents.decide.graph.NODES`), built by the service's own
`build_decide_graph` with nodes that do nothing. Both are measured in the same run, in blocks
interleaved with the decisions, so that the machine's load moves all three alike. Prints JSON: p50,
p95 and p99 in milliseconds of the floor and of decisions without query text, with query text
(the embedding model the services loaded — the packaged all-MiniLM-L6-v2 unless it is missing —
with its query cache and the input guard's remembered findings cleared before each decision, so
every query is embedded and analyzed as if first seen), and with both warm (the same eight
queries again and again), on the web (Thompson sampling), and
decisions per second on the app surface (the linear contextual bandit in the demo policy); each
scenario's p50 over the nine-node floor's is its `ratio`, over the service shape's
`ratio_service_shape`. No LLM: the offline writer answers.

`python_calls` counts the Python and C calls of each scenario and floor (`calls_per_run`, on
`CALLS_N` runs each, after the timed runs): a figure the machine's load does not move, for
comparing checkouts (with the same `--n`) on a busy host, where timings drift by more than most
changes; native work (Qdrant Edge, SQLite, ONNX Runtime) counts one call however long it runs.

`langgraph_in_decision` says what LangGraph itself costs inside a decision (issue 14): the
Python calls it makes outside our steps per decision, in a real decision and in the service
shape's no-op run (calls do not depend on the load), and its CPU time outside our steps
(`time.thread_time`, median) in real decisions, in the no-op shape run back to back, and in the
no-op shape whose nodes touch memory as a decision's steps do (a sample of a few megabytes of
Python objects) before returning nothing. LangGraph makes about as many calls in a decision as in
the no-op run; what the no-op floor leaves out is that every superstep of a decision starts with
the caches holding the steps' data rather than LangGraph's, and the memory-touching floor shows
that cost without a decision.

    .venv/bin/python bench/decide.py [--n 300] [--home DIR] [--out FILE]

Figures depend on the machine; compare the ratios between runs, not single numbers.
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
from langgraph.graph import END, START, StateGraph

from agents.decide.graph import MAX_DRAFTS, NODES, build_decide_graph, run_config, steps
from agents.decide.run import DecideRequest, decide
from agents.decide.state import DecideContext, DecideInput, DecideState
from agents.factory import settle
from agents.services import Services
from agents.tracing import Node, traced
from bench.report import demo_service, emit
from store.schemas import Channel

QUERIES = [
    "trail running shoes for wet weather",
    "a good red wine for a dinner party",
    "strong coffee beans for espresso",
    "gift for a ten year old who likes puzzles",
    "quiet wireless headphones",
    "cast iron pan",
    "yoga mat that does not slip",
    "cat toys",
]
BLOCK = 25  # decisions per block; floor and decision blocks alternate
CALLS_N = 40  # runs of each scenario and floor whose Python calls are counted (`calls_per_run`)
# Supersteps of the nine-node shape at most: five steps before the copy, a generate and a guard
# per draft, explain and log, and LangGraph's input.
NINE_NODE_RECURSION_LIMIT = 5 + 2 * MAX_DRAFTS + 2 + 1


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    ordered = np.array(samples_ms)
    return {
        "n": len(samples_ms),
        "p50_ms": round(float(np.percentile(ordered, 50)), 3),
        "p95_ms": round(float(np.percentile(ordered, 95)), 3),
        "p99_ms": round(float(np.percentile(ordered, 99)), 3),
        "mean_ms": round(statistics.fmean(samples_ms), 3),
    }


def noop_graph() -> Any:
    """Our decision graph's shape with nodes that do nothing: LangGraph's own cost per decision."""

    def node(state: DecideState) -> dict[str, Any]:
        return {}

    graph = StateGraph(DecideState, context_schema=DecideContext, input_schema=DecideInput)
    names = ["guard_input", "profile", "retrieve", "policy", "select_offer", "generate"]
    names += ["guard_output", "explain", "log"]
    for name in names:
        graph.add_node(name, node)
    graph.add_edge(START, "guard_input")
    for before, after in itertools.pairwise(names[:6]):
        graph.add_edge(before, after)
    graph.add_conditional_edges("generate", lambda s: "guard_output", ["guard_output", "explain"])
    graph.add_conditional_edges("guard_output", lambda s: "explain", ["generate", "explain"])
    graph.add_edge("explain", "log")
    graph.add_edge("log", END)
    return graph.compile(name="noop")


def noop_service_shape() -> Any:
    """The graph the service runs (`build_decide_graph`) with nodes that do nothing, routed as
    the service's are."""

    def node(state: DecideState, runtime: Any) -> dict[str, Any]:
        return {}

    return build_decide_graph(dict.fromkeys(NODES, node))


class Outside:
    """Counts what LangGraph does outside our nodes while a graph runs: the nodes it wraps
    (`node`) mark when they run, `invoke` marks the graph's run, and `count` counts the Python
    and C calls made in between; `cpu_s` is the thread's CPU time spent in the
    graph's run outside the nodes, for the last run."""

    def __init__(self) -> None:
        self.in_node = 0
        self.in_invoke = False
        self.node_s = 0.0
        self.cpu_s = 0.0

    def node(self, wrapped: Any) -> Node:
        def run(state: DecideState, runtime: Any) -> dict[str, Any]:
            self.in_node += 1
            start = time.thread_time()
            try:
                return wrapped(state, runtime)
            finally:
                self.node_s += time.thread_time() - start
                self.in_node -= 1

        return run

    def invoke(self, graph: Any) -> Any:
        original = graph.invoke

        def run(*args: Any, **kwargs: Any) -> Any:
            self.in_invoke, self.node_s = True, 0.0
            start = time.thread_time()
            try:
                return original(*args, **kwargs)
            finally:
                self.cpu_s = time.thread_time() - start - self.node_s
                self.in_invoke = False

        object.__setattr__(graph, "invoke", run)
        return graph

    def count(self, calls: Callable[[], None]) -> int:
        """The calls LangGraph makes outside the nodes while `calls` runs."""
        return count_calls(calls, when=lambda: self.in_invoke and not self.in_node)


def langgraph_in_decision(
    services: Services, requests: list[DecideRequest], context: DecideContext
) -> dict[str, Any]:
    """LangGraph's own calls and CPU time outside our steps: in decisions (the service's graph
    with its own steps, each node timed), in the no-op service shape, and in the no-op service
    shape whose nodes first touch memory as steps do."""
    real, noop, touching = Outside(), Outside(), Outside()
    graph = real.invoke(
        build_decide_graph(
            {
                name: real.node(steps(*named) if len(named) > 1 else traced(*named[0]))
                for name, named in NODES.items()
            }
        )
    )
    measured = replace(services, graph=graph)
    # About the Python objects a decision's steps read (rows, points, models): a few megabytes.
    objects = [(i, str(i)) for i in range(100_000)]

    def nothing(state: DecideState, runtime: Any) -> dict[str, Any]:
        return {}

    def touch(state: DecideState, runtime: Any) -> dict[str, Any]:
        sum(number for number, _ in random.sample(objects, 3000))
        return {}

    noop_graph = noop.invoke(build_decide_graph(dict.fromkeys(NODES, noop.node(nothing))))
    touching_graph = touching.invoke(build_decide_graph(dict.fromkeys(NODES, touching.node(touch))))

    def floor_of(graph: Any) -> Callable[[], None]:
        def run() -> None:
            graph.invoke(
                {"query": None, "k": 10, "context": {}},
                run_config(),
                context=context,
                version="v2",
            )

        return run

    floors = {"noop": floor_of(noop_graph), "touching": floor_of(touching_graph)}
    for request in requests[:10]:  # warm-up
        decide(measured, request)
        floors["noop"]()
        floors["touching"]()
    cpu: dict[str, list[float]] = {"decision": [], "noop": [], "touching": []}
    for first in range(0, len(requests), BLOCK):
        for request in requests[first : first + BLOCK]:
            decide(measured, request)
            cpu["decision"].append(real.cpu_s * 1000)
        for name, watch in (("noop", noop), ("touching", touching)):
            for _ in requests[first : first + BLOCK]:
                floors[name]()
                cpu[name].append(watch.cpu_s * 1000)
    counted = requests[:20]

    def decisions() -> None:
        for request in counted:
            decide(measured, request)

    def noop_runs() -> None:
        for _ in counted:
            floors["noop"]()

    decision_calls, noop_calls = real.count(decisions), noop.count(noop_runs)

    def p50(name: str) -> float:
        return round(statistics.median(cpu[name]), 3)

    return {
        "calls_outside_steps_per_decision": round(decision_calls / len(counted)),
        "calls_per_noop_service_shape_run": round(noop_calls / len(counted)),
        "cpu_ms_outside_steps_p50": p50("decision"),
        "noop_service_shape_cpu_ms_p50": p50("noop"),
        "noop_service_shape_touching_memory_cpu_ms_p50": p50("touching"),
        "n": len(requests),
    }


def count_calls(run: Callable[[], None], when: Callable[[], bool] | None = None) -> int:
    """The Python and C function calls made while `run` runs (`sys.setprofile` sees each call
    and C call), only those made while `when()` holds if it is given."""
    count = 0

    def hook(frame: FrameType, event: str, arg: Any) -> None:
        nonlocal count
        if event in ("call", "c_call") and (when is None or when()):
            count += 1

    sys.setprofile(hook)
    try:
        run()
    finally:
        sys.setprofile(None)
    return count


def calls_per_run(work: Callable[[int], None], n: int) -> float:
    """The Python and C function calls one run of `work` makes, averaged over `n` runs
    (`count_calls`). Unlike a timing it does not move with the machine's load: two checkouts,
    or two runs of one, can be compared to the unit on a busy host. It counts Python-level work
    only: a call into Qdrant Edge, SQLite or ONNX Runtime is one call however long the native
    work takes."""

    def runs() -> None:
        for i in range(n):
            work(i)

    return count_calls(runs) / n


def interleaved(n: int, *calls: Callable[[int], None]) -> list[list[float]]:
    """`n` timings of each call, in alternating blocks of BLOCK."""
    samples: list[list[float]] = [[] for _ in calls]
    for first in range(0, n, BLOCK):
        for timings, call in zip(samples, calls, strict=True):
            for i in range(first, min(first + BLOCK, n)):
                start = time.perf_counter()
                call(i)
                timings.append((time.perf_counter() - start) * 1000)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="decisions per scenario")
    parser.add_argument("--home", type=Path, default=None, help="working folder (default: temp)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/decide.json"))
    args = parser.parse_args()

    services, users = demo_service(args.home)
    rng = np.random.default_rng(1)
    later = datetime.now(UTC)

    def request(i: int, with_query: bool, channel: Channel = Channel.web) -> DecideRequest:
        return DecideRequest(
            channel=channel,
            user_id=str(rng.choice(users)),
            query=QUERIES[i % len(QUERIES)] if with_query else None,
        )

    noop, shape = noop_graph(), noop_service_shape()
    # The floors get a context of the same kind as a decision's, built once.
    context = DecideContext(services=services, run=None, vault=None, known=None, decision_id="")  # type: ignore[arg-type]

    def floor(i: int) -> None:
        noop.invoke(
            {"query": None, "k": 10, "context": {}},
            {"recursion_limit": NINE_NODE_RECURSION_LIMIT},
            context=context,
        )

    def shape_floor(i: int) -> None:
        # Invoked as `agents.decide.run` invokes the service's graph (LangGraph's v2 output).
        shape.invoke(
            {"query": None, "k": 10, "context": {}},
            run_config(),
            context=context,
            version="v2",
        )

    settle()
    for i in range(20):  # warm-up: caches, lazy imports, SQLite pages
        decide(services, request(i, i % 2 == 0))
        floor(i)
        shape_floor(i)

    def no_query(i: int) -> None:
        decide(services, request(i, False))

    # The query cache of the embedder (`retrieval.embedder.CachedEmbedder`), cleared for cold runs.
    clear_cache = services.tools.embedder.cache_clear

    def cold_query(i: int) -> None:
        if clear_cache is not None:
            clear_cache()
        # And as a query the input guard has never seen: it remembers its findings per text.
        services.pii.forget()
        decide(services, request(i, True))

    def warm_query(i: int) -> None:
        decide(services, request(i, True))

    def app(i: int) -> None:
        # A day after the last, so that frequency caps never leave a person without an offer.
        nonlocal later
        later += timedelta(days=1)
        decide(services, request(i, False, Channel.app), now=later)

    results: dict[str, Any] = {
        "embedder": services.embedder.name,
        # What runs it: OnnxEmbedder (the default), or SentenceTransformerEmbedder (torch, the
        # fallback when there is no usable export) under the query cache.
        "embedder_runtime": type(getattr(services.embedder, "inner", services.embedder)).__name__,
        "vector_backend": services.index.backend,
        "degraded": services.degraded,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "cpus": os.cpu_count(),
    }
    floors: list[float] = []
    shape_floors: list[float] = []
    scenarios: list[tuple[str, Callable[[int], None]]] = [
        ("without_query", no_query),
        ("with_query", cold_query),
        ("with_query_cached", warm_query),
        ("app_lints", app),
    ]
    for name, work in scenarios:
        started = time.perf_counter()
        floor_ms, shape_ms, work_ms = interleaved(args.n, floor, shape_floor, work)
        elapsed = (time.perf_counter() - started - (sum(floor_ms) + sum(shape_ms)) / 1000) or 1e-9
        floors += floor_ms
        shape_floors += shape_ms
        stats = percentiles(work_ms)
        stats["decisions_per_s"] = round(args.n / elapsed, 1)
        stats["floor_p50_ms"] = percentiles(floor_ms)["p50_ms"]
        stats["ratio"] = round(stats["p50_ms"] / stats["floor_p50_ms"], 2)
        stats["service_shape_floor_p50_ms"] = percentiles(shape_ms)["p50_ms"]
        stats["ratio_service_shape"] = round(
            stats["p50_ms"] / stats["service_shape_floor_p50_ms"], 2
        )
        results[name] = stats
    results["noop_langgraph_floor"] = percentiles(floors)
    results["noop_langgraph_floor_service_shape"] = percentiles(shape_floors) | {
        "nodes": list(NODES)
    }
    # The scenarios' Python calls, on people drawn afresh: the load-free counterpart of the
    # ratios above (`calls_per_run`). Two runs of a checkout with the same --n agree within
    # half a percent (the bandits draw at random); another --n leaves another history behind
    # the timed decisions, which the counted ones read.
    rng = np.random.default_rng(2)
    floor_calls = calls_per_run(floor, CALLS_N)
    results["python_calls"] = {
        "n": CALLS_N,
        "noop_langgraph_floor": round(floor_calls),
        "noop_langgraph_floor_service_shape": round(calls_per_run(shape_floor, CALLS_N)),
    }
    for name, work in scenarios:
        calls = calls_per_run(work, CALLS_N)
        results["python_calls"][name] = {
            "per_decision": round(calls),
            "ratio": round(calls / floor_calls, 2),
        }
    results["langgraph_in_decision"] = langgraph_in_decision(
        services, [request(i, False) for i in range(args.n)], context
    )
    results["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    services.close()

    emit(results, args.out)


if __name__ == "__main__":
    main()
