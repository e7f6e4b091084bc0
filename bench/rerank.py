"""What the hybrid's item-item re-ranking adds to a decision: an interleaved A/B in one process.

The demo world is seeded (which fits the item-item model, as `make run` does); then decisions for
known people without request text run in alternating blocks with each arm: Qdrant's order (no
model), and the re-ranking over pools of `--pools` candidates (the model loaded with that
`itemitem_pool`, weights from the settings). Every arm sees the same people in the same order.
Prints JSON per arm: p50 and p95 of the whole decision and of the retrieve step alone
(`tools.retrieve.retrieve_candidates`), SQL statements per decision, and each p50 over the
no-model arm's. Wall-clock figures move with the machine's load; the ratios are the figure.

    .venv/bin/python bench/rerank.py [--n 300] [--pools 100 200] [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import event

import agents.decide.graph
from agents.decide.run import DecideRequest, decide
from agents.factory import settle
from agents.services import Services, load_itemitem
from bench.report import demo_service, emit
from store.schemas import Channel

BLOCK = 25  # decisions per block; the arms' blocks alternate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="decisions per arm")
    parser.add_argument("--pools", type=int, nargs="+", default=[100, 200])
    parser.add_argument("--out", type=Path, default=Path("bench/results/rerank.json"))
    args = parser.parse_args()

    services, users = demo_service(prefix="attune-rerank-")
    settings = services.settings
    people = [str(u) for u in np.random.default_rng(1).choice(users, size=args.n)]

    arms: dict[str, Services] = {"qdrant_order": _with(services, None)}
    for pool in args.pools:
        model = load_itemitem(settings.model_copy(update={"itemitem_pool": pool}))
        arms[f"rerank_pool_{pool}"] = _with(services, model)

    statements = [0]
    event.listen(services.db.engine, "before_cursor_execute", lambda *a: _bump(statements))
    retrieve_ms: list[float] = []
    retrieve = agents.decide.graph.retrieve_candidates

    def timed(*a: Any, **kw: Any) -> Any:
        started = time.perf_counter()
        try:
            return retrieve(*a, **kw)
        finally:
            retrieve_ms.append((time.perf_counter() - started) * 1000)

    agents.decide.graph.retrieve_candidates = timed

    def run(world: Services) -> Callable[[int], object]:
        return lambda i: decide(world, DecideRequest(channel=Channel.web, user_id=people[i]))

    settle()
    for world in arms.values():  # warm-up: caches, lazy imports, SQLite pages, model pages
        for i in range(10):
            run(world)(i)
    samples: dict[str, dict[str, list[float]]] = {
        name: {"decide": [], "retrieve": [], "sql": []} for name in arms
    }
    for first in range(0, args.n, BLOCK):
        for name, world in arms.items():
            call = run(world)
            for i in range(first, min(first + BLOCK, args.n)):
                before, retrieve_ms[:] = statements[0], []
                started = time.perf_counter()
                call(i)
                samples[name]["decide"].append((time.perf_counter() - started) * 1000)
                samples[name]["retrieve"].append(sum(retrieve_ms))
                samples[name]["sql"].append(statements[0] - before)

    base = samples["qdrant_order"]
    results: dict[str, Any] = {
        "world": "demo (data/demo): 1,204 items, 33,653 events",
        "embedder": services.embedder.name,
        "itemitem_items": len(services.tools.itemitem.item_ids) if services.tools.itemitem else 0,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "n_per_arm": args.n,
    }
    for name, got in samples.items():
        results[name] = {
            "decide_p50_ms": _p(got["decide"], 50),
            "decide_p95_ms": _p(got["decide"], 95),
            "retrieve_p50_ms": _p(got["retrieve"], 50),
            "retrieve_p95_ms": _p(got["retrieve"], 95),
            "sql_per_decision": float(np.mean(got["sql"])),
            "decide_p50_ratio": round(_p(got["decide"], 50) / _p(base["decide"], 50), 3),
            "retrieve_p50_ratio": round(_p(got["retrieve"], 50) / _p(base["retrieve"], 50), 3),
        }
    services.close()
    emit(results, args.out)


def _with(services: Services, model: Any) -> Services:
    return replace(services, tools=replace(services.tools, itemitem=model))


def _bump(counter: list[int]) -> None:
    counter[0] += 1


def _p(values: list[float], q: int) -> float:
    return round(float(np.percentile(values, q)), 3)


if __name__ == "__main__":
    main()
