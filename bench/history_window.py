"""How much of a person's history the item-item re-ranking needs: NDCG@10 of the MovieLens
hybrid on the VALIDATION split (carved from training; the test split is never read) when the
re-ranking sees only each person's latest `window` training ratings, as the service's history
read (`retrieval.sequence.person_history`, `limit`) would give it.

The hybrid is the suite's (`evals/suites/movielens.yaml`): Qdrant Edge's fused query fetches
`pool` candidates per person, once; `ItemItemModel.candidate_scores` scores them from the
(truncated) history; `fuse` orders them with the served weights. The chosen point of the last
suite run is used as it stands (λ 100, `other_weight` 0, transitions 0.8, Qdrant 0.1): nothing is
tuned here. Prints JSON: per window, mean NDCG@10, the paired difference with the whole history
(mean, and a percentile bootstrap interval over users), how many users it truncated, and how
many users' top 10 changed.

    .venv/bin/python bench/history_window.py [--windows 1000 200 100 50 30 20] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from evals.movielens import time_split, validation_split
from evals.ranking.attune_retrieval import SOURCES, AttuneRetrieval
from evals.ranking.metrics import ranking_metrics
from evals.ranking.tuning import Tuned
from retrieval.collab import ALSParams
from retrieval.embedder import load_embedder
from retrieval.hybrid import HybridWeights
from retrieval.sequence import fuse

CHOSEN = {
    "regularization": 100.0,
    "other_weight": 0.0,
    "transition_weight": 0.8,
    "qdrant_weight": 0.1,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, default=Path("/work/shared/data/movielens/ml-latest-small")
    )
    parser.add_argument("--windows", type=int, nargs="+", default=[1000, 200, 100, 50, 30, 20])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    started = time.perf_counter()
    split = time_split(args.data, holdout=0.2, relevant_min=4.0)
    valid = validation_split(split, holdout=0.2, relevant_min=4.0)  # the test split: unused
    del split
    params = {  # the suite file's pinned Qdrant query
        "als": {"factors": 32, "regularization": 0.05, "iterations": 20, "alpha": 2.0, "seed": 0},
        "weights": {"taste": 0.25, "collab": 2.0, "recent": 0.5, "prefetch": 200},
    }
    embedder = load_embedder("sentence-transformers/all-MiniLM-L6-v2")
    movies = list(valid.movies.values())
    content = dict(
        zip((m.movie_id for m in movies), embedder.embed([m.text() for m in movies]), strict=True)
    )
    tuned = Tuned(valid, params, {"min_count": 2, "max_items": 10_000}, 4.0)
    model, weigh = tuned.item_item(CHOSEN["regularization"], CHOSEN)
    pool = model.params.pool
    with tempfile.TemporaryDirectory() as folder:
        attune = AttuneRetrieval(
            valid,
            Path(folder),
            embedder,
            content,
            ALSParams(**params["als"]),  # type: ignore[arg-type]
            HybridWeights(**params["weights"]),  # type: ignore[arg-type]
            taste_items=20,
            liked_min=4.0,
        )
        try:
            candidates = {
                user: attune.recommend(
                    "hybrid",
                    user,
                    {r.movie for r in valid.train[user]},
                    pool,
                    frozenset(SOURCES["hybrid"]),
                )
                for user in valid.users
            }
        finally:
            attune.close()
    lengths = np.array([len(valid.train[user]) for user in valid.users])

    def run(window: int | None) -> tuple[np.ndarray, list[list[str]]]:
        ndcg, tops = [], []
        for user in valid.users:
            ratings = valid.train[user]
            history = [(r.movie, weigh(r, len(ratings) - 1 - i)) for i, r in enumerate(ratings)]
            if window is not None:
                history = history[-window:]
            ease, transitions = model.candidate_scores(candidates[user], history)
            top = fuse(
                candidates[user],
                ease,
                transitions,
                transition_weight=model.params.transition_weight,
                qdrant_weight=model.params.qdrant_weight,
                rrf_k=model.params.rrf_k,
            )[:10]
            tops.append(top)
            ndcg.append(ranking_metrics(top, valid.relevant[user], 10)["ndcg@10"])
        return np.array(ndcg), tops

    whole, whole_tops = run(None)
    rng = np.random.default_rng(0)
    resamples = rng.integers(0, len(whole), size=(1000, len(whole)))
    report: dict = {
        "data": str(args.data),
        "split": "validation (each user's training ratings split again by time, latest 20% "
        "held out); the test split is not read",
        "validation_users": len(valid.users),
        "training_ratings_per_user": {
            "min": int(lengths.min()),
            "median": float(np.median(lengths)),
            "p90": float(np.percentile(lengths, 90)),
            "max": int(lengths.max()),
        },
        "point": CHOSEN,
        "pool": pool,
        "whole_history_ndcg@10": float(whole.mean()),
        "windows": [],
    }
    for window in args.windows:
        ndcg, tops = run(window)
        diff = ndcg - whole
        boot = diff[resamples].mean(axis=1)
        report["windows"].append(
            {
                "window": window,
                "ndcg@10": float(ndcg.mean()),
                "minus_whole": float(diff.mean()),
                "minus_whole_95ci": [
                    float(np.percentile(boot, 2.5)),
                    float(np.percentile(boot, 97.5)),
                ],
                "ratio_to_whole": float(ndcg.mean() / whole.mean()),
                "users_truncated": int((lengths > window).sum()),
                "users_top10_changed": sum(a != b for a, b in zip(tops, whole_tops, strict=True)),
                "users_better": int((diff > 0).sum()),
                "users_worse": int((diff < 0).sum()),
            }
        )
        print(json.dumps(report["windows"][-1]), flush=True)
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["load"] = os.getloadavg()
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
