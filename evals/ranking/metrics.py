"""Top-k metrics of one person's recommendations (recall, NDCG, MRR) and a system's mean NDCG."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from evals.movielens import Split

Recommend = Callable[[str, set[str], int], list[str]]
"""(user, movies they rated in training, k) -> their top-k movies."""


def ranking_metrics(recommended: list[str], relevant: set[str], k: int) -> dict[str, float]:
    top = recommended[:k]
    gains = [1.0 if item in relevant else 0.0 for item in top]
    dcg = sum(g / math.log2(rank + 2) for rank, g in enumerate(gains))
    ideal = sum(1 / math.log2(rank + 2) for rank in range(min(len(relevant), k)))
    first = next((rank for rank, g in enumerate(gains) if g), None)
    return {
        f"recall@{k}": sum(gains) / len(relevant),
        f"ndcg@{k}": dcg / ideal if ideal else 0.0,
        f"mrr@{k}": 1 / (first + 1) if first is not None else 0.0,
    }


def mean_ndcg(split: Split, recommend: Recommend, k: int) -> float:
    values = []
    for user in split.users:
        seen = {r.movie for r in split.train[user]}
        values.append(
            ranking_metrics(recommend(user, seen, k), split.relevant[user], k)[f"ndcg@{k}"]
        )
    return float(np.mean(values))
