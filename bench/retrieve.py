"""What retrieval costs per decision: `retrieve_candidates` alone, over the demo world's people.

Counts the vector store calls and SQL statements of each call, and times it (wall clock, and
optionally cProfile ms by part). Each person's profile is loaded before the clock starts, as the
decision graph's profile node does, so only retrieval is measured.

    .venv/bin/python bench/retrieve.py [--n 200] [--query-share 0.5] [--home HOME] [--profile]

Run it on one home from two checkouts, alternating blocks, for an A/B (`--blocks`); prints JSON.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import event

from agents.factory import build_services, settle
from agents.reindex import start as start_service
from bench.report import product_settings
from store.schemas import Channel
from store.users import resolve_subject
from tools.context import RunContext
from tools.profile import subject_record
from tools.retrieve import retrieve_candidates
from tools.schemas import RetrieveInput

QUERIES = ["something for the kitchen", "strong coffee beans", "running shoes", "cat toys"]
SHARD_CALLS = ("query", "query_batch", "retrieve", "count", "search", "scroll")
# Functions whose cumulative time is a part of retrieval, by (file fragment, function).
PARTS = {
    "retrieve_candidates": ("tools/retrieve.py", "retrieve_candidates"),
    "popular": ("tools/retrieve.py", "_popular"),
    "taste": ("tools/retrieve.py", "_taste"),
    "rank": ("tools/retrieve.py", "_rank"),
    "rerank": ("tools/retrieve.py", "_rerank"),
    "refined_match": ("retrieval/hybrid.py", "refined_match"),
    "to_hit": ("retrieval/index.py", "to_hit"),
    "policy check_items": ("policies/engine.py", "check_items"),
    "person_history": ("retrieval/sequence.py", "person_history"),
    "store popular_items": ("store/catalog.py", "popular_items"),
    "store get_items": ("store/catalog.py", "get_items"),
    "SQL execute": ("sqlalchemy/engine/base.py", "_execute_context"),
}


class CountingShard:
    """A Qdrant Edge shard that counts the calls made through it."""

    def __init__(self, shard: Any, calls: Counter[str]) -> None:
        self._shard = shard
        self._calls = calls

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._shard, name)
        if name not in SHARD_CALLS:
            return attribute

        def counted(*args: Any, **kwargs: Any) -> Any:
            self._calls[name] += 1
            return attribute(*args, **kwargs)

        return counted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--query-share", type=float, default=0.5)
    parser.add_argument("--home", type=Path, default=None)
    parser.add_argument("--profile", action="store_true", help="also cProfile ms by part")
    args = parser.parse_args()
    home = args.home or Path(tempfile.mkdtemp(prefix="attune-bench-retrieve-"))
    settings = product_settings(home=home, seed=1)
    fresh = not (home / "attune.db").exists()
    services = build_services(settings)
    if fresh:
        start_service(services, settings.demo_dir)
    calls: Counter[str] = Counter()
    index = services.tools.index
    if hasattr(index, "_shard"):
        index._shard = CountingShard(index._shard, calls)
    event.listen(services.db.engine, "before_cursor_execute", lambda *_: calls.update(["sql"]))
    users = [f"u_{i:04d}" for i in range(1, 401)] + [None] * 40
    rng = np.random.default_rng(1)
    with services.db.session() as session:
        subjects = [
            resolve_subject(session, user, None if user else f"anon-bench-{n}")
            for n, user in enumerate(users)
        ]

    def context() -> tuple[RunContext, RetrieveInput]:
        subject = subjects[int(rng.integers(len(subjects)))]
        run = RunContext(deps=services.tools, subject=subject, channel=Channel.web, now=_now())
        subject_record(run)  # the profile, loaded before retrieval as the graph does
        query = str(rng.choice(QUERIES)) if rng.random() < args.query_share else None
        return run, RetrieveInput(query=query, k=10)

    settle()
    for _ in range(20):
        retrieve_candidates(*context())
    counted: Counter[str] = Counter()
    profiler = cProfile.Profile() if args.profile else None
    times = []
    for _ in range(args.n):
        run, request = context()
        calls.clear()
        if profiler is not None:
            profiler.enable()
        start = time.perf_counter()
        retrieve_candidates(run, request)
        times.append(time.perf_counter() - start)
        if profiler is not None:
            profiler.disable()
        counted.update(calls)
    services.close()
    result: dict[str, Any] = {
        "calls": args.n,
        "query_share": args.query_share,
        "p50_ms": round(statistics.median(times) * 1000, 3),
        "mean_ms": round(statistics.fmean(times) * 1000, 3),
        "per_call": {name: round(count / args.n, 2) for name, count in sorted(counted.items())},
    }
    if profiler is not None:
        entries = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
        result["profiled_ms"] = {
            name: round(
                sum(
                    ct
                    for (file, _, func), (_, _, _, ct, _) in entries.items()
                    if func == function and file.endswith(fragment)
                )
                / args.n
                * 1000,
                3,
            )
            for name, (fragment, function) in PARTS.items()
        }
        shard = {
            func.split("'")[1] if "'" in func else func: round(ct / args.n * 1000, 3)
            for (file, _, func), (_, _, _, ct, _) in entries.items()
            if "EdgeShard" in func
        }
        result["profiled_ms"]["qdrant edge (shard calls)"] = shard
    json.dump(result, sys.stdout, indent=2)
    print()


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


if __name__ == "__main__":
    main()
