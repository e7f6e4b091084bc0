"""Qdrant Edge's search threads: its default pool against one thread (`retrieval.edge.SEARCH_THREADS`).

With its default, Qdrant Edge hands each query to a pool of search threads while the calling
thread waits, holding the GIL; with `max_search_threads=1` the calling thread runs the search
itself. On shards of `--items` synthetic items each (random unit content vectors, random collab
vectors, the demo's payload fields, segments optimized as after an ingest), the same requests
as a decision without text sends (two nearest-neighbour prefetches of 200, fused by RRF,
filtered to items in stock and for the person's age) run on the shard opened each way, the two
alternating in blocks (`max_search_threads` 0, Qdrant Edge's own choice, and 1); per block, p50/p95 wall time and the process's CPU time per query (all
threads). Also how many of the process's threads ran the search (`edge-search-N` threads with
CPU time).

    .venv/bin/python bench/edge_threads.py [--items 1000,100000] [--n 300] [--blocks 4]

Prints JSON and writes it to `--out` (default `bench/results/edge_threads.json`). Building the
100k shard takes about two minutes, most of it in `optimize()`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import qdrant_edge as qe

from bench.http_load import _stat_cpu
from bench.report import emit
from retrieval.edge import _IN_STOCK, SEARCH_THREADS, EdgeIndex
from retrieval.index import COLLAB_VECTOR, VECTOR_NAME

ROOT = Path(__file__).resolve().parents[1]
DIM, COLLAB_DIM, BATCH, LIMIT = 384, 64, 2000, 200


def build(path: Path, items: int, rng: np.random.Generator) -> dict[str, qe.EdgeVectorParams]:
    """A shard of `items` synthetic points, optimized; its dense vectors' config."""
    index = EdgeIndex(path, dim=DIM, collab_dim=COLLAB_DIM)
    for start in range(0, items, BATCH):
        size = min(BATCH, items - start)
        content = rng.standard_normal((size, DIM)).astype(np.float32)
        content /= np.linalg.norm(content, axis=1, keepdims=True)
        collab = rng.standard_normal((size, COLLAB_DIM)).astype(np.float32)
        points = [
            qe.Point(
                uuid.uuid4(),
                {VECTOR_NAME: content[i].tolist(), COLLAB_VECTOR: collab[i].tolist()},
                {
                    "item_id": f"i{start + i}",
                    "in_stock": bool(rng.random() < 0.9),
                    "min_age": float(rng.integers(0, 14)),
                },
            )
            for i in range(size)
        ]
        index._shard.update(qe.UpdateOperation.upsert_points(points))
    index.optimize()
    index.close()
    return index._dense_config()


def requests(rng: np.random.Generator, n: int) -> list[qe.QueryRequest]:
    where = qe.Filter(
        must=[_IN_STOCK, qe.FieldCondition(key="min_age", range=qe.RangeFloat(lte=12.0))]
    )
    out = []
    for _ in range(n):
        content = rng.standard_normal(DIM).astype(np.float32)
        collab = rng.standard_normal(COLLAB_DIM).astype(np.float32)
        out.append(
            qe.QueryRequest(
                limit=LIMIT,
                prefetches=[
                    qe.Prefetch(
                        limit=LIMIT, query=qe.Query.Nearest(content.tolist(), using=VECTOR_NAME)
                    ),
                    qe.Prefetch(
                        limit=LIMIT, query=qe.Query.Nearest(collab.tolist(), using=COLLAB_VECTOR)
                    ),
                ],
                query=qe.Fusion.Rrf(k=60, weights=[1.0, 1.0]),
                filter=where,
                with_payload=False,
                with_vector=False,
            )
        )
    return out


def search_threads_cpu() -> float:
    """CPU seconds run so far by this process's `edge-search-N` threads."""
    return sum(
        _stat_cpu(task / "stat")
        for task in Path(f"/proc/{os.getpid()}/task").iterdir()
        if (task / "comm").exists() and (task / "comm").read_text().startswith("edge-search")
    )


def block(
    path: Path,
    vectors: dict[str, qe.EdgeVectorParams],
    threads: int,
    asked: list[qe.QueryRequest],
) -> dict[str, Any]:
    shard = qe.EdgeShard.load(str(path), qe.EdgeConfig(vectors=vectors, max_search_threads=threads))
    try:
        for request in asked[:20]:
            shard.query(request)
        pool_before, cpu_before = search_threads_cpu(), time.process_time()
        times = []
        for request in asked:
            start = time.perf_counter()
            shard.query(request)
            times.append(time.perf_counter() - start)
        cpu = time.process_time() - cpu_before
        return {
            "p50_ms": round(statistics.median(times) * 1000, 3),
            "p95_ms": round(float(np.percentile(times, 95)) * 1000, 3),
            "cpu_ms_per_query": round(cpu / len(asked) * 1000, 3),
            "search_pool_cpu_ms": round((search_threads_cpu() - pool_before) * 1000, 1),
        }
    finally:
        shard.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", default="1000,100000")
    parser.add_argument("--n", type=int, default=300, help="queries per block")
    parser.add_argument("--blocks", type=int, default=4, help="blocks per setting, alternating")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "bench" / "results" / "edge_threads.json"
    )
    args = parser.parse_args()
    rng = np.random.default_rng(1)
    results: dict[str, Any] = {
        "service_setting": SEARCH_THREADS,
        "load_average_start": os.getloadavg(),
    }
    with tempfile.TemporaryDirectory(prefix="attune-bench-edge-") as scratch:
        for items in (int(n) for n in args.items.split(",")):
            path = Path(scratch) / f"shard-{items}"
            started = time.perf_counter()
            vectors = build(path, items, rng)
            asked = requests(rng, args.n)
            runs: dict[str, list[dict[str, Any]]] = {"default_pool": [], "one_thread": []}
            for _ in range(args.blocks):
                runs["default_pool"].append(block(path, vectors, 0, asked))
                runs["one_thread"].append(block(path, vectors, 1, asked))
            medians = {
                name: {key: statistics.median(run[key] for run in blocks) for key in blocks[0]}
                for name, blocks in runs.items()
            }
            results[str(items)] = {
                "build_s": round(time.perf_counter() - started, 1),
                "blocks": runs,
                "median_of_blocks": medians,
                "one_thread_over_default": {
                    key: round(medians["one_thread"][key] / medians["default_pool"][key], 3)
                    for key in ("p50_ms", "p95_ms", "cpu_ms_per_query")
                },
            }
    emit(results, args.out)


if __name__ == "__main__":
    main()
