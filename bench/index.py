"""Vector index throughput and latency on synthetic catalogs: Qdrant Edge vs qdrant-client local.

For each backend and catalog size: ingest through `ingest_items` with the service's embedder
(items/s, store and index together), `optimize()` on Edge (timed on its own), then top-10
search latency over random queries, unfiltered and filtered (one category, in stock, allowed
at an age). Prints JSON and writes it to `bench/results/index.json`. Run with
`.venv/bin/python bench/index.py [--sizes 10000,100000] [--backends edge,local]`.

qdrant-client's local mode is brute force in Python, so it gets fewer queries, and a size whose
estimated run time (scaled from a smaller size) exceeds the budget is skipped, with the reason.
Figures depend on the machine: compare medians and ratios between runs, not single numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from agents.factory import settle
from agents.settings import Settings
from bench.decide import percentiles
from retrieval.catalog import ingest_items
from retrieval.edge import EdgeIndex
from retrieval.embedder import Embedder, load_embedder
from retrieval.index import ItemFilter, VectorIndex
from retrieval.server import QdrantServerIndex
from store.db import Database
from store.schemas import Item

K = 10
WARM_UP = 50
TARGET_P99_MS = 5.0
# The word lists are packed, not one word per line.
# fmt: off
CATEGORIES = (
    "beauty", "books", "coffee", "electronics", "fashion", "garden", "grocery", "health", "home",
    "jewelry", "kitchen", "music", "office", "outdoor", "pets", "shoes", "sports", "tools", "toys",
    "wine",
)
BRANDS = (
    "Arcwave", "Aurelia", "Borealis", "Cobalt", "Driftwood", "Ember", "Fjord", "Granite",
    "Halcyon", "Ivory", "Juniper", "Kestrel", "Lumen", "Meridian", "Nimbus", "Orchard",
)
ADJECTIVES = (
    "compact", "classic", "lightweight", "durable", "wireless", "organic", "quiet", "waterproof",
    "handmade", "vintage", "slim", "insulated", "foldable", "premium", "rustic", "ergonomic",
    "soft", "bold", "smart", "travel",
)
MATERIALS = (
    "wool", "leather", "bamboo", "steel", "cotton", "oak", "ceramic", "linen", "glass", "silicone",
    "iron", "merino", "walnut", "copper", "hemp",
)
NOUNS = (
    "scarf", "jacket", "kettle", "headphones", "backpack", "lamp", "mug", "blender", "tent",
    "notebook", "sneakers", "puzzle", "bracelet", "candle", "chair", "speaker", "pan", "mat",
    "watch", "grinder", "blanket", "drill", "leash", "vase", "bottle",
)
# fmt: on
MIN_AGES = (0, 0, 0, 0, 0, 12, 16, 18)


def _title(rng: np.random.Generator) -> tuple[str, str, str, str]:
    return (
        str(rng.choice(BRANDS)),
        str(rng.choice(ADJECTIVES)),
        str(rng.choice(MATERIALS)),
        str(rng.choice(NOUNS)),
    )


def synthetic_items(n: int, rng: np.random.Generator) -> list[Item]:
    """`n` valid items with varied text, 20 categories, ~20% out of stock, some age limits."""
    items = []
    for i in range(n):
        brand, adjective, material, noun = _title(rng)
        category = str(rng.choice(CATEGORIES))
        in_stock = rng.random() >= 0.2
        items.append(
            Item(
                item_id=f"bench_{i:07d}",
                title=f"{brand} {adjective} {material} {noun}",
                description=f"A {adjective} {noun} in {material} from {brand}, for {category}.",
                category=category,
                tags=[noun, material, adjective],
                price=round(float(np.clip(rng.lognormal(3.5, 1.0), 0.5, 50_000)), 2),
                margin=round(float(rng.uniform(0.05, 0.6)), 2),
                stock=int(rng.integers(1, 500)) if in_stock else 0,
                min_age=int(rng.choice(MIN_AGES)),
            )
        )
    return items


def random_filters(n: int, rng: np.random.Generator) -> list[ItemFilter]:
    """One category, in stock only, and allowed at an age drawn from 8 to 40."""
    return [
        ItemFilter(
            categories=(str(rng.choice(CATEGORIES)),),
            in_stock_only=True,
            max_min_age=int(rng.integers(8, 41)),
        )
        for _ in range(n)
    ]


def selectivity(items: list[Item], filters: list[ItemFilter]) -> float:
    """The mean fraction of the catalog a filter lets through."""
    category = np.array([item.category for item in items])
    in_stock = np.array([item.available for item in items])
    min_age = np.array([item.min_age for item in items])
    fractions = [
        float(
            np.mean(
                np.isin(category, flt.categories) & in_stock & (min_age <= (flt.max_min_age or 0))
            )
        )
        for flt in filters
    ]
    return round(float(np.mean(fractions)), 4)


def time_searches(
    index: VectorIndex, queries: np.ndarray, filters: list[ItemFilter | None]
) -> list[float]:
    """Milliseconds per top-K search, after untimed warm-up searches (pages of a freshly
    optimized shard are cold) and with the garbage collector settled, as the service does at
    start-up: otherwise collections over the catalog built for the bench land in the tail."""
    for vector, flt in list(zip(queries, filters, strict=True))[:WARM_UP]:
        index.search(vector, k=K, flt=flt)
    settle()
    samples = []
    for vector, flt in zip(queries, filters, strict=True):
        start = time.perf_counter()
        index.search(vector, k=K, flt=flt)
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def run_cell(
    backend: str,
    make_index: Callable[[Path, int], VectorIndex],
    items: list[Item],
    embedder: Embedder,
    queries: np.ndarray,
    filters: list[ItemFilter],
    *,
    batch: int,
    folder: Path,
) -> dict[str, Any]:
    """Ingest, optimize (Edge), search: one backend at one catalog size, in `folder`."""
    db = Database(f"sqlite:///{folder / 'attune.db'}")
    index = make_index(folder, embedder.dim)
    try:
        start = time.perf_counter()
        ingest_items(db, embedder, index, items, batch=batch)
        ingest_s = time.perf_counter() - start
        if index.count() != len(items):
            raise RuntimeError(f"{backend}: {index.count()} points stored, {len(items)} expected")
        cell: dict[str, Any] = {
            "backend": backend,
            "size": len(items),
            "ingest": {"seconds": round(ingest_s, 2), "items_per_s": round(len(items) / ingest_s)},
        }
        if isinstance(index, EdgeIndex):
            start = time.perf_counter()
            cell["optimized"] = index.optimize()
            cell["optimize_s"] = round(time.perf_counter() - start, 2)
        unfiltered = time_searches(index, queries, [None] * len(queries))
        filtered = time_searches(index, queries, list(filters))
        cell["queries"] = len(queries)
        cell["search_ms"] = {
            "unfiltered": percentiles(unfiltered),
            "filtered": percentiles(filtered),
        }
        cell["filtered_selectivity"] = selectivity(items, filters)
        return cell
    finally:
        index.close()
        db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="10000,100000", help="catalog sizes, comma-separated")
    parser.add_argument("--backends", default="edge,local", help="edge and/or local")
    parser.add_argument("--queries", type=int, default=300, help="queries per scenario (Edge)")
    parser.add_argument(
        "--local-queries", type=int, default=30, help="queries per scenario in local mode"
    )
    parser.add_argument(
        "--local-budget-s", type=float, default=600, help="skip a local-mode size above this"
    )
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("bench/results/index.json"))
    args = parser.parse_args()
    sizes = sorted(int(size) for size in args.sizes.split(","))
    backends = args.backends.split(",")
    unknown = set(backends) - {"edge", "local"}
    if unknown:
        parser.error(f"unknown backends {sorted(unknown)}: use edge and/or local")

    settings = Settings()
    embedder = load_embedder(
        settings.embedding_model,
        fallback_dim=settings.embedding_dim,
        allow_download=settings.model_downloads,
    )
    makers: dict[str, Callable[[Path, int], VectorIndex]] = {
        "edge": lambda folder, dim: EdgeIndex(folder / "qdrant-edge", dim=dim),
        "local": lambda folder, dim: QdrantServerIndex(path=str(folder / "qdrant-local"), dim=dim),
    }
    query_rng = np.random.default_rng(args.seed + 1)
    query_count = max(args.queries, args.local_queries)
    query_texts = [" ".join(_title(query_rng)) for _ in range(query_count)]
    all_queries = embedder.embed(query_texts)
    all_filters = random_filters(query_count, query_rng)

    load_before = os.getloadavg()
    results: list[dict[str, Any]] = []
    for size in sizes:
        items = synthetic_items(size, np.random.default_rng(args.seed))
        for backend in backends:
            count = args.queries if backend == "edge" else args.local_queries
            name = "qdrant-edge" if backend == "edge" else "qdrant-client-local"
            skip = backend == "local" and _too_slow(results, name, size, count, args.local_budget_s)
            if skip:
                results.append({"backend": name, "size": size, "skipped": skip})
                continue
            print(f"{name} at {size} items ...", file=sys.stderr, flush=True)
            with tempfile.TemporaryDirectory(prefix="attune-bench-index-") as folder:
                cell = run_cell(
                    name,
                    makers[backend],
                    items,
                    embedder,
                    all_queries[:count],
                    all_filters[:count],
                    batch=args.batch,
                    folder=Path(folder),
                )
            if backend == "local":
                cell["note"] = (
                    f"query count capped at {count}: local mode searches by brute force in Python"
                )
            results.append(cell)

    report = _report(args, embedder, results)
    # Other work on the machine skews latencies: the 1-minute load average shows how much.
    report["machine"]["load_average_1m"] = {"start": load_before[0], "end": os.getloadavg()[0]}
    text = json.dumps(report, indent=2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    sys.stdout.write(text + "\n")


def _too_slow(
    results: list[dict[str, Any]], backend: str, size: int, queries: int, budget_s: float
) -> str | None:
    """Why a local-mode cell is skipped: its time estimated linearly from the largest smaller
    size measured (brute-force search and ingest both grow with the catalog), over budget."""
    measured = [r for r in results if r["backend"] == backend and "skipped" not in r]
    if not measured:
        return None
    base = max(measured, key=lambda r: r["size"])
    search_s = sum(base["search_ms"][kind]["mean_ms"] for kind in ("unfiltered", "filtered"))
    per_size_s = base["ingest"]["seconds"] + search_s / 1000 * queries
    estimate = per_size_s * size / base["size"]
    if estimate <= budget_s:
        return None
    return (
        f"estimated {estimate:.0f} s (scaled from {base['size']} items) exceeds the "
        f"{budget_s:.0f} s budget"
    )


def _report(
    args: argparse.Namespace, embedder: Embedder, results: list[dict[str, Any]]
) -> dict[str, Any]:
    edge = [r for r in results if r["backend"] == "qdrant-edge" and r["size"] >= 100_000]
    return {
        "machine": {
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "qdrant_edge_py": metadata.version("qdrant-edge-py"),
            "qdrant_client": metadata.version("qdrant-client"),
        },
        "embedder": {"name": embedder.name, "dim": embedder.dim, "degraded": embedder.degraded},
        "k": K,
        "batch": args.batch,
        "seed": args.seed,
        "queries": "embeddings of random synthetic item titles (the same for every cell)",
        "filter": "one category of 20, in stock only, max_min_age a random age from 8 to 40",
        "store": "SQLite in a temporary folder, written in the same transaction as the index",
        "target": {
            "goal": f"filtered top-{K} p99 <= {TARGET_P99_MS} ms on 100k items, Qdrant Edge",
            "met": all(r["search_ms"]["filtered"]["p99_ms"] <= TARGET_P99_MS for r in edge)
            if edge
            else None,
        },
        "results": results,
    }


if __name__ == "__main__":
    main()
