"""Decision latency in process on the demo world, beside the floor of LangGraph itself.

The floor is a graph of our graph's shape — the same nine nodes, edges, conditional edges,
state schema and context — whose nodes do nothing; it is measured in the same run, in blocks
interleaved with the decisions, so that the machine's load moves both alike. Prints JSON: p50,
p95 and p99 in milliseconds of the floor and of decisions without query text, with query text
(the embedding model the services loaded — the packaged all-MiniLM-L6-v2 unless it is missing —
with its query cache cleared before each decision, so every query is embedded), and with the
query cache warm (the same eight queries again and again), on the web (Thompson sampling), and
decisions per second on the app surface (the linear contextual bandit in the demo policy); each
scenario's p50 over the floor's is its `ratio`. No LLM: the offline writer answers.

    .venv/bin/python bench/decide.py [--n 300] [--home DIR] [--out FILE]

Figures depend on the machine; compare the ratios between runs, not single numbers.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from langgraph.graph import END, START, StateGraph

from agents.decide.graph import RECURSION_LIMIT
from agents.decide.run import DecideRequest, decide
from agents.decide.state import DecideContext, DecideInput, DecideState
from agents.factory import build_services, settle
from agents.reindex import start as start_service
from agents.settings import Settings
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


def interleaved(
    n: int, floor: Callable[[int], None], work: Callable[[int], None]
) -> tuple[list[float], list[float]]:
    """`n` timings of each, in alternating blocks of BLOCK."""
    floor_ms: list[float] = []
    work_ms: list[float] = []
    for first in range(0, n, BLOCK):
        for samples, call in ((floor_ms, floor), (work_ms, work)):
            for i in range(first, min(first + BLOCK, n)):
                start = time.perf_counter()
                call(i)
                samples.append((time.perf_counter() - start) * 1000)
    return floor_ms, work_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="decisions per scenario")
    parser.add_argument("--home", type=Path, default=None, help="working folder (default: temp)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/decide.json"))
    args = parser.parse_args()

    home = args.home or Path(tempfile.mkdtemp(prefix="attune-bench-"))
    settings = Settings(home=home, seed=1)
    services = build_services(settings)
    start_service(services, settings.demo_dir)
    lines = (settings.demo_dir / "users.jsonl").read_text().splitlines()
    users = [json.loads(line)["user_id"] for line in lines if line.strip()]
    rng = np.random.default_rng(1)
    later = datetime.now(UTC)

    def request(i: int, with_query: bool, channel: Channel = Channel.web) -> DecideRequest:
        return DecideRequest(
            channel=channel,
            user_id=str(rng.choice(users)),
            query=QUERIES[i % len(QUERIES)] if with_query else None,
        )

    noop = noop_graph()
    # The floor gets a context of the same kind as a decision's, built once.
    context = DecideContext(services=services, run=None, vault=None, known=None, decision_id="")  # type: ignore[arg-type]

    def floor(i: int) -> None:
        noop.invoke(
            {"query": None, "k": 10, "context": {}},
            {"recursion_limit": RECURSION_LIMIT},
            context=context,
        )

    settle()
    for i in range(20):  # warm-up: caches, lazy imports, SQLite pages
        decide(services, request(i, i % 2 == 0))
        floor(i)

    def no_query(i: int) -> None:
        decide(services, request(i, False))

    # The query cache of the embedder (`retrieval.embedder.CachedEmbedder`), cleared for cold runs.
    clear_cache = getattr(getattr(services.embedder, "_cached", None), "cache_clear", None)

    def cold_query(i: int) -> None:
        if clear_cache is not None:
            clear_cache()
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
        "vector_backend": services.index.backend,
        "degraded": services.degraded,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "cpus": os.cpu_count(),
    }
    floors: list[float] = []
    for name, work in (
        ("without_query", no_query),
        ("with_query", cold_query),
        ("with_query_cached", warm_query),
        ("app_lints", app),
    ):
        started = time.perf_counter()
        floor_ms, work_ms = interleaved(args.n, floor, work)
        elapsed = (time.perf_counter() - started - sum(floor_ms) / 1000) or 1e-9
        floors += floor_ms
        stats = percentiles(work_ms)
        stats["decisions_per_s"] = round(args.n / elapsed, 1)
        stats["floor_p50_ms"] = percentiles(floor_ms)["p50_ms"]
        stats["ratio"] = round(stats["p50_ms"] / stats["floor_p50_ms"], 2)
        results[name] = stats
    results["noop_langgraph_floor"] = percentiles(floors)
    results["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    services.close()

    text = json.dumps(results, indent=2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    sys.stdout.write(text + "\n")


if __name__ == "__main__":
    main()
