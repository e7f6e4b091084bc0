"""What a decision with text costs beyond one without, and the vocabulary read inside it.

On the demo world, in one process, interleaved in blocks (the machine's load moves every
figure; the ratios are what to read):

- `decide`: decisions without a query, and with a (cached) query under the vocabulary as it
  was (two COUNT(*)s per request with text, reloaded when a count moves) and as it is (one
  single-row read of the catalog's version on a Core connection), p50 each;
- `refresh`: one `Vocabulary.refresh` of a standing catalog — the counts, the version read,
  the version handed in by the caller (no read) — on the demo catalog and again after
  `--items` more items are stored (the COUNT grows with the catalog, the version read does
  not);
- `encode`: a query's embedding, cold (a model pass) and cached.

Prints JSON and writes `bench/results/query_path.json`. Set `ATTUNE_EMBEDDING_EXPORT_DIR` to the
ONNX export's folder for the service's default backend. Run with
`nice -n 5 .venv/bin/python bench/query_path.py [--blocks 10] [--per-block 20] [--items 100000]`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import func, insert, select

from agents.decide.run import DecideRequest, decide
from agents.factory import build_services, settle
from agents.privacy.vocabulary import Vocabulary
from agents.reindex import start
from agents.services import Services
from bench.decide import percentiles
from bench.embed import queries
from bench.report import emit, product_settings
from store.catalog import bump_catalog_version, catalog_version
from store.db import Database
from store.models import CatalogItem, CatalogOffer
from store.schemas import Channel

RESULTS = Path(__file__).resolve().parent / "results" / "query_path.json"
QUERIES = ("something for the kitchen", "strong coffee beans", "running shoes", "cat toys")


class CountedVocabulary(Vocabulary):
    """The vocabulary as it was before the catalog's version: two counts per refresh."""

    def __init__(self) -> None:
        super().__init__()
        self._counts: tuple[int, int] = (-1, -1)

    def refresh(self, db: Database, version: int | None = None) -> None:
        with db.session() as session:
            counts = session.execute(
                select(
                    select(func.count()).select_from(CatalogItem).scalar_subquery(),
                    select(func.count()).select_from(CatalogOffer).scalar_subquery(),
                )
            ).one()
        if tuple(counts) != self._counts:
            super().refresh(db)
            self._counts = (counts[0], counts[1])


def _interleaved(arms: dict[str, Callable[[int], object]], blocks: int, per_block: int) -> dict:
    """Each arm's call timings, the arms alternating in blocks (their order turned each block)."""
    samples: dict[str, list[float]] = {name: [] for name in arms}
    names = list(arms)
    for block in range(blocks):
        for name in names if block % 2 == 0 else names[::-1]:
            for i in range(per_block):
                started = time.perf_counter()
                arms[name](block * per_block + i)
                samples[name].append((time.perf_counter() - started) * 1000)
    return {name: percentiles(times) for name, times in samples.items()}


def _decide_arms(services: Services) -> dict[str, Callable[[int], object]]:
    users = [f"u_{i:04d}" for i in range(1, 401)]
    old, new = CountedVocabulary(), Vocabulary()

    def run(vocabulary: Vocabulary | None) -> Callable[[int], object]:
        def one(i: int) -> None:
            if vocabulary is not None:
                services.vocabulary = vocabulary
            query = QUERIES[i % len(QUERIES)] if vocabulary is not None else None
            decide(
                services, DecideRequest(channel=Channel.web, user_id=users[i % 400], query=query)
            )

        return one

    return {"no_query": run(None), "query_counts": run(old), "query_version": run(new)}


def _refresh_arms(db: Database) -> dict[str, Callable[[int], object]]:
    old, new = CountedVocabulary(), Vocabulary()
    old.refresh(db)
    new.refresh(db)
    with db.session() as session:
        version = catalog_version(session)
    return {
        "counts": lambda _: old.refresh(db),
        "version_read": lambda _: new.refresh(db),
        "version_given": lambda _: new.refresh(db, version),
    }


def _grow(db: Database, items: int) -> None:
    rows = [
        {
            "item_id": f"bench-{i}",
            "category": "bench",
            "price": 1.0,
            "stock": 1,
            "min_age": 0,
            "popularity": 0.0,
            "data": {"item_id": f"bench-{i}", "title": f"bench item {i}", "price": 1.0},
        }
        for i in range(items)
    ]
    with db.session() as session:
        for start_at in range(0, items, 10_000):
            session.execute(insert(CatalogItem), rows[start_at : start_at + 10_000])
        bump_catalog_version(session)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=10)
    parser.add_argument("--per-block", type=int, default=20)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    settings = product_settings(home=Path(tempfile.mkdtemp(prefix="attune-query-path-")))
    services = build_services(settings)
    try:
        start(services, settings.demo_dir)
        settle()
        arms = _decide_arms(services)
        for i in range(30):  # warm-up: every query embedded and cached, every path compiled
            for arm in arms.values():
                arm(i)
        results: dict[str, Any] = {"embedder": services.embedder.name, "load": _load()}
        results["decide"] = _interleaved(arms, args.blocks, args.per_block)
        reps = args.blocks * args.per_block
        results["refresh_demo"] = _interleaved(_refresh_arms(services.db), args.blocks, reps)
        if args.items:
            _grow(services.db, args.items)
            results[f"refresh_plus_{args.items}_items"] = _interleaved(
                _refresh_arms(services.db), args.blocks, reps
            )
        texts = queries(args.blocks * args.per_block)
        embedder = services.embedder
        results["encode"] = _interleaved(
            {
                "cold": lambda i: embedder.embed([texts[i]]),
                "cached": lambda i: embedder.embed_query(QUERIES[i % len(QUERIES)]),
            },
            args.blocks,
            args.per_block,
        )
        decide_p50 = {k: v["p50_ms"] for k, v in results["decide"].items()}
        results["query_counts_over_version_p50"] = round(
            decide_p50["query_counts"] / decide_p50["query_version"], 3
        )
        results["load_after"] = _load()
    finally:
        services.close()
    emit(results, args.out)
    return results


def _load() -> float:
    with open("/proc/loadavg") as handle:
        return float(handle.read().split()[0])


if __name__ == "__main__":
    main()
