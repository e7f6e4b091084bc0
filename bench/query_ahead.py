"""A first-seen query's decision with its vector begun ahead, and without: one process, interleaved.

A decision with new query text runs the embedding model once and the PII guard's NER once.
`agents.decide.run.decide` begins the model on the embedder's own thread (`CachedEmbedder.
embed_ahead`) before it reads the person and scans the text, so the two run on both cores. Here
the same service makes decisions with that on and off (`embed_ahead` answering None, as for a
cached text), in blocks of `--block`, the order swapped every pair; the query cache and the
guard's findings are cleared before each decision, so every query is first-seen. Reported per
side: wall time p50/p95 (what the caller waits); process CPU p50 (both threads: the work is moved
to the other core, not saved); and the CPU of the decision's own thread p50, which is what bounds
one process's decisions per second, since the service runs its decisions one at a time on the
event loop (`api.gate`); and the ratios ahead / inline. Prints JSON.

    .venv/bin/python bench/query_ahead.py [--pairs 15] [--block 20] [--out FILE]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agents.collector import settle
from agents.decide.run import DecideRequest, decide
from bench.decide import QUERIES, percentiles
from bench.report import demo_service, emit
from store.schemas import Channel

RESULTS = Path(__file__).resolve().parent / "results" / "query_ahead.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=15)
    parser.add_argument("--block", type=int, default=20)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    services, users = demo_service()
    rng = np.random.default_rng(1)
    embedder = services.tools.embedder
    begin = embedder.embed_ahead

    def decision(i: int, ahead: bool) -> None:
        embedder.cache_clear()
        services.pii.forget()
        # The instance attribute shadows the method: off, the vector is computed by retrieval.
        embedder.embed_ahead = begin if ahead else (lambda text: None)  # type: ignore[method-assign]
        user = str(rng.choice(users))
        decide(services, DecideRequest(Channel.web, user_id=user, query=QUERIES[i % len(QUERIES)]))

    settle()
    for i in range(2 * args.block):  # warm-up: lazy imports, SQLite pages, the embedder's thread
        decision(i, i % 2 == 0)
    wall: dict[bool, list[float]] = {True: [], False: []}
    cpu: dict[bool, list[float]] = {True: [], False: []}
    own: dict[bool, list[float]] = {True: [], False: []}
    for pair in range(args.pairs):
        for ahead in (True, False) if pair % 2 == 0 else (False, True):
            for i in range(args.block):
                started, used, mine = time.perf_counter(), time.process_time(), time.thread_time()
                decision(i, ahead)
                wall[ahead].append((time.perf_counter() - started) * 1000)
                cpu[ahead].append((time.process_time() - used) * 1000)
                own[ahead].append((time.thread_time() - mine) * 1000)
    del embedder.embed_ahead

    def side(ahead: bool) -> dict[str, Any]:
        return percentiles(wall[ahead]) | {
            "process_cpu_p50_ms": round(statistics.median(cpu[ahead]), 3),
            "own_thread_cpu_p50_ms": round(statistics.median(own[ahead]), 3),
        }

    results: dict[str, Any] = {
        "embedder_runtime": type(embedder.inner).__name__,
        "pairs": args.pairs,
        "block": args.block,
        "inline": side(False),
        "ahead": side(True),
    }
    results["wall_p50_ratio"] = round(results["ahead"]["p50_ms"] / results["inline"]["p50_ms"], 3)
    results["process_cpu_p50_ratio"] = round(
        results["ahead"]["process_cpu_p50_ms"] / results["inline"]["process_cpu_p50_ms"], 3
    )
    results["own_thread_cpu_p50_ratio"] = round(
        results["ahead"]["own_thread_cpu_p50_ms"] / results["inline"]["own_thread_cpu_p50_ms"], 3
    )
    emit(results, args.out)


if __name__ == "__main__":
    main()
