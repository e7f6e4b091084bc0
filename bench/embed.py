"""Encode time per query of the default embedder (the packaged all-MiniLM-L6-v2), offline.

For each torch thread count: one query at a time (what a request pays on a cache miss), the
same queries again through the service's query cache (a hit), and a batch of 64 (ingest).
The hashing fallback is measured beside it. Prints JSON and writes `bench/results/embed.json`.
Run with `.venv/bin/python bench/embed.py [--threads 1,2] [--queries 200]`.

sentence-transformers' ONNX backend (and its int8 export) needs `optimum` and `onnxruntime`;
the report says whether they are installed, and measures that backend only when they are.
Figures move with the machine's load: compare thread counts within one run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.decide import percentiles
from retrieval.embedder import (
    MINILM,
    CachedEmbedder,
    Embedder,
    HashingEmbedder,
    limit_torch_threads,
    load_embedder,
)

RESULTS = Path(__file__).resolve().parent / "results" / "embed.json"
_NOUNS = ("coffee", "wine", "train set", "puzzle", "doll", "kite", "lego", "scarf", "board game")
_ASKS = ("a gift for my dad who loves {}", "cheap {}", "{} for a 5 year old", "best {}", "{}")


def queries(n: int) -> list[str]:
    """n distinct shopper-like queries, deterministic."""
    texts = [ask.format(noun) for noun in _NOUNS for ask in _ASKS]
    return [f"{texts[i % len(texts)]} {i // len(texts)}".strip() for i in range(n)]


def per_query_ms(embedder: Embedder, texts: list[str], *, cached: bool = False) -> dict[str, Any]:
    samples = []
    for text in texts:
        started = time.perf_counter()
        if cached:
            embedder.embed_query(text)
        else:
            embedder.embed([text])
        samples.append((time.perf_counter() - started) * 1000)
    return percentiles(samples)


def batch_per_s(embedder: Embedder, texts: list[str], batch: int = 64) -> float:
    chunk = (texts * (batch // len(texts) + 1))[:batch]
    embedder.embed(chunk)  # warm-up
    started = time.perf_counter()
    rounds = 3
    for _ in range(rounds):
        embedder.embed(chunk)
    return round(rounds * batch / (time.perf_counter() - started), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    texts = queries(args.queries)
    model = load_embedder(MINILM.name)
    report: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "model": model.name,
        "degraded": model.degraded,
        "queries": len(texts),
        "threads": {},
    }
    model.embed(texts[:8])  # warm-up: first call allocates
    for threads in [int(t) for t in args.threads.split(",")]:
        limit_torch_threads(threads)
        cached = CachedEmbedder(model)
        for text in texts:
            cached.embed_query(text)
        report["threads"][str(threads)] = {
            "batch_1": per_query_ms(model, texts),
            "cache_hit": per_query_ms(cached, texts, cached=True),
            "batch_64_per_s": batch_per_s(model, texts),
        }
    limit_torch_threads(1)
    hashing = HashingEmbedder()
    report["hashing_fallback"] = {"batch_1": per_query_ms(hashing, texts)}
    missing = [m for m in ("onnxruntime", "optimum") if importlib.util.find_spec(m) is None]
    report["onnx"] = (
        {"measured": False, "reason": f"not installed: {', '.join(missing)}"}
        if missing
        else {"measured": False, "reason": "installed; not wired into the service yet"}
    )
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
