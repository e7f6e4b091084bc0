"""Cross-validated choice of the search hybrid's fusion, on the tuning half of the product-search
suite only (`evals/suites/search.yaml`).

The suite tunes its hybrid on the 20 tuning queries and reports it on held-out ones; with 20
queries a grid's best point is partly luck. This script asks which *tuning procedure* (a grid
searched by best mean NDCG@k) generalises better, without looking at any held-out query: the
tuning half is split into folds, each procedure picks its point on the other folds and is scored
on the left-out one (repeated k-fold and leave-one-out), and the cross-validated NDCG@k of each
procedure is compared with BM25's on the same queries. Only queries with `split: tune` are read
(`tuning_queries` drops the others before any relevance is computed or any search is run).

Procedures:
- `served`: the suite's own `tune` grid (fusion, min_similarity, feedback, feedback_items);
- `rrf-weighted`: that grid plus weighted RRF with the BM25 keywords weighted 1-4x;
- `dbsf-weighted`: DBSF with the keywords (or the embedding) counted 2-3x, emulated by repeating
  the source inside the match (Qdrant's DBSF takes no weights; this is not what
  `retrieval.hybrid.text_match` builds: shipping it needs a change there);
- `min-similarity`: the suite's grid with a wider minimum cosine (0.2-0.5);
- `all`: the union.

    ATTUNE_DATA_DIR=../shared/data python -m evals.search_cv [--folds 5 --repeats 50] [--out F]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from evals.ranking.metrics import ranking_metrics
from evals.search import (
    Query,
    ingested,
    load_queries,
    searcher,
    suite_data,
)
from retrieval.embedder import Embedder
from retrieval.hybrid import HybridWeights, feedback_vector, text_match
from retrieval.index import ItemFilter, Match, VectorIndex

SUITE = Path(__file__).parent / "suites" / "search.yaml"


@dataclass(frozen=True)
class Config:
    """One grid point: the hybrid's weights, and how many times the match repeats its keyword
    and embedding sources (1 and 1: what `text_match` builds)."""

    weights: HybridWeights
    lexical_copies: int = 1
    dense_copies: int = 1

    def label(self) -> dict[str, Any]:
        w = self.weights
        out: dict[str, Any] = {
            "fusion": w.fusion,
            "min_similarity": w.min_similarity,
            "feedback": w.feedback,
            "feedback_items": w.feedback_items,
        }
        if w.fusion == "rrf":
            out |= {"lexical": w.lexical, "dense": w.dense}
        if (self.lexical_copies, self.dense_copies) != (1, 1):
            out |= {"lexical_copies": self.lexical_copies, "dense_copies": self.dense_copies}
        return out


def tuning_queries(files: Iterable[Path]) -> list[Query]:
    """The tuning half only: held-out and fresh queries are dropped here, before anything else."""
    return [q for path in files for q in load_queries(path) if q.split == "tune"]


def build_match(config: Config, text: str, vector: np.ndarray | None) -> Match:
    match = text_match(config.weights, text, vector)
    if (config.lexical_copies, config.dense_copies) == (1, 1):
        return match
    lexical, *dense = match.sources
    sources = (lexical,) * config.lexical_copies + tuple(dense) * config.dense_copies
    return replace(match, sources=sources)


def hybrid_searcher(
    index: VectorIndex, embedder: Embedder, config: Config, k: int
) -> Callable[[str], list[str]]:
    """`evals.search.searcher("hybrid")` with `build_match` in place of `text_match` (the same
    one round of feedback as `retrieval.hybrid.refined_match`)."""
    weights, everything = config.weights, ItemFilter()

    def search(text: str) -> list[str]:
        vector = embedder.embed_query(text)
        match = build_match(config, text, vector)
        if weights.feedback > 0 and np.any(vector):
            top = index.fused_search(
                [],
                k=weights.feedback_items,
                flt=everything,
                prefetch=weights.prefetch,
                with_vectors=True,
                match=match,
            )
            neighbours = [hit.vector for hit in top if hit.vector is not None]
            if neighbours:
                refined = feedback_vector(weights, vector, neighbours)
                match = build_match(config, text, refined)
        hits = index.fused_search([], k=k, flt=everything, prefetch=weights.prefetch, match=match)
        return [h.item_id for h in hits]

    return search


def ndcg(search: Callable[[str], list[str]], queries: list[Query], relevant: dict, k: int) -> list:
    return [ranking_metrics(search(q.text), relevant[q.id], k)[f"ndcg@{k}"] for q in queries]


def grids(tune: dict[str, list[Any]]) -> dict[str, list[Config]]:
    """Each procedure's grid points; each starts with the served default (a tie keeps it)."""
    base = HybridWeights()

    def product(**axes: list[Any]) -> list[HybridWeights]:
        points = [base]
        for name, values in axes.items():
            points = [replace(p, **{name: v}) for p in points for v in values]
        return points

    served = [Config(w) for w in product(**tune)]
    feedback = {"feedback": tune.get("feedback", [1.0]), "feedback_items": [5, 3, 10]}
    rrf = [
        Config(w)
        for w in product(
            fusion=["rrf"],
            min_similarity=tune.get("min_similarity", [0.3]),
            lexical=[1.0, 1.5, 2.0, 3.0, 4.0],
            **feedback,
        )
    ]
    dbsf = [
        Config(w, lex, den)
        for w in product(min_similarity=tune.get("min_similarity", [0.3]), **feedback)
        for lex, den in [(1, 1), (2, 1), (3, 1), (3, 2), (1, 2)]
    ]
    similarity = [Config(w) for w in product(**{**tune, "min_similarity": [0.3, 0.2, 0.4, 0.5]})]
    union: dict[str, Config] = {}
    for config in served + rrf + dbsf + similarity:
        union.setdefault(json.dumps(config.label(), sort_keys=True), config)
    return {
        "served": served,
        "rrf-weighted": served + rrf,
        "dbsf-weighted": served + dbsf,
        "min-similarity": similarity,
        "all": list(union.values()),
    }


def choose(scores: np.ndarray, rows: list[int], train: np.ndarray) -> int:
    """The first of `rows` with the best mean over the `train` queries."""
    means = scores[np.array(rows)][:, train].mean(axis=1)
    return rows[int(np.argmax(means))]


def cross_validate(
    scores: np.ndarray, rows: list[int], folds: int, repeats: int, seed: int
) -> dict[str, Any]:
    """Repeated k-fold and leave-one-out NDCG of the procedure 'best point of `rows`'."""
    n = scores.shape[1]
    rng = np.random.default_rng(seed)
    kfold = np.zeros((repeats, n))
    for r in range(repeats):
        order = rng.permutation(n)
        for fold in np.array_split(order, folds):
            train = np.setdiff1d(np.arange(n), fold)
            kfold[r, fold] = scores[choose(scores, rows, train), fold]
    loo = np.array([scores[choose(scores, rows, np.delete(np.arange(n), q)), q] for q in range(n)])
    return {"kfold": kfold, "loo": loo}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    started = time.time()
    data = suite_data(SUITE, tuning_queries)
    params, queries, embedder = data.params, data.queries, data.embedder
    catalog, relevant, cache = data.catalog, data.relevant, data.cache
    k = int(params.get("k", 10))
    procedures = grids(params.get("tune", {}))
    configs = procedures["all"]
    keys = [json.dumps(c.label(), sort_keys=True) for c in configs]
    with ingested(catalog, embedder, Path("/tmp"), cache) as (index, _info):
        bm25 = np.array(
            ndcg(searcher("bm25", index, embedder, HybridWeights(), k), queries, relevant, k)
        )
        dense = np.array(
            ndcg(searcher("dense", index, embedder, HybridWeights(), k), queries, relevant, k)
        )
        # Sanity: the emulation without copies is the served hybrid (the same items: items
        # with tied fused scores come back in either order from one call to the next).
        served = searcher("hybrid", index, embedder, HybridWeights(), k)
        mine = hybrid_searcher(index, embedder, Config(HybridWeights()), k)
        if any(set(served(q.text)) != set(mine(q.text)) for q in queries):
            raise SystemExit("build_match without copies differs from the served hybrid")
        scores = np.array(
            [ndcg(hybrid_searcher(index, embedder, c, k), queries, relevant, k) for c in configs]
        )
    result: dict[str, Any] = {
        "queries": [q.id for q in queries],
        "embedder": embedder.name,
        "degraded": embedder.degraded,
        "folds": args.folds,
        "repeats": args.repeats,
        "bm25_ndcg": round(float(bm25.mean()), 4),
        "dense_ndcg": round(float(dense.mean()), 4),
        "served_point_ndcg": round(float(scores[0].mean()), 4),
        "procedures": {},
        "points": [
            {**c.label(), f"ndcg@{k}": round(float(s.mean()), 4)}
            for c, s in zip(configs, scores, strict=True)
        ],
    }
    reference = None
    for name, grid in procedures.items():
        rows = [keys.index(json.dumps(c.label(), sort_keys=True)) for c in grid]
        cv = cross_validate(scores, rows, args.folds, args.repeats, seed=0)
        kfold = cv["kfold"].mean(axis=1)  # per repeat: mean over queries
        if reference is None:
            reference = kfold
        best = rows[int(np.argmax(scores[rows].mean(axis=1)))]
        result["procedures"][name] = {
            "points": len(rows),
            "in_sample_best": {
                **configs[best].label(),
                "ndcg": round(float(scores[best].mean()), 4),
            },
            "cv_ndcg": round(float(kfold.mean()), 4),
            "cv_ndcg_repeat_spread": [
                round(float(np.percentile(kfold, p)), 4) for p in (2.5, 97.5)
            ],
            "loo_ndcg": round(float(cv["loo"].mean()), 4),
            "cv_over_bm25": round(float(kfold.mean() / bm25.mean()), 4),
            "loo_over_bm25": round(float(cv["loo"].mean() / bm25.mean()), 4),
            "cv_minus_served_procedure": round(float((kfold - reference).mean()), 4),
            "repeats_better_than_served": int((kfold > reference + 1e-12).sum()),
            "repeats_worse_than_served": int((kfold < reference - 1e-12).sum()),
        }
    result["seconds"] = round(time.time() - started, 1)
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    print(json.dumps({n: p for n, p in result["procedures"].items()}, indent=1))
    print(
        "bm25",
        result["bm25_ndcg"],
        "dense",
        result["dense_ndcg"],
        "served point",
        result["served_point_ndcg"],
    )


if __name__ == "__main__":
    main()
