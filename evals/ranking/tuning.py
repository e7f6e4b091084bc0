"""Tuning on the validation split: the grids, and the best point of each system's grid.

Fairness: the input weighting is not the hybrid's privilege. `other_weight` is a hyperparameter
of EASE^R, RP3beta and ALS too, searched over the same grid (`grids.inputs`) on the same
validation split; each system's own grid is multiplied by it.

Tuning: every tuned choice (EASE's λ, RP3beta's α and β, ALS's factors and regularization, the
hybrid's `ease_weight`, and every one's `other_weight`) is made on a validation split carved from the training
part only (`evals.movielens.validation_split`); the test split only scores.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.sparse import csr_matrix

from evals.base import (
    Row,
)
from evals.movielens import Split
from evals.ranking.attune_retrieval import SOURCES, AttuneRetrieval
from evals.ranking.metrics import Recommend
from evals.recommenders import (
    ALSRanker,
    InputWeights,
    ItemItem,
    UserItems,
    ease,
    rerank,
    rp3beta,
)
from retrieval.collab import ALSParams

BASELINE_TYPES = {"popularity", "item-knn", "ease", "rp3beta", "als"}
TUNED_TYPES = {"ease", "rp3beta", "als", "hybrid"}
DEFAULT_GRIDS: dict[str, dict[str, list[Any]]] = {
    "ease": {"regularization": [200.0, 500.0]},
    "rp3beta": {"alpha": [0.25, 0.5, 1.0], "beta": [0.1, 0.3, 0.6]},
    "als": {"factors": [32, 64, 128], "regularization": [0.01, 0.1], "alpha": [2.0, 10.0]},
    "hybrid": {"ease_weight": [0.0, 1.0, 3.0, 10.0]},
    "inputs": {"other_weight": [0.0, 0.1, 0.3, 1.0]},
}
"""Small grids on purpose: each point of the EASE grid is one matrix inverse."""


@dataclass
class Scored:
    row: Row
    per_user: dict[str, np.ndarray]  # metric -> value per evaluated user, in `split.users` order


class Tuned:
    """The tuned systems of one split, fitted on its training part.

    Every system reads the training ratings through `InputWeights` (ratings below `liked_min`
    count `other_weight`), a hyperparameter each tunes on the validation split. The hybrid
    re-ranks Attune's Qdrant candidates with EASE^R (see `rerank` and the module docstring);
    EASE models are fitted once per (regularization, other_weight) and shared by the `ease`
    baseline and the hybrid's re-ranking stage.
    """

    def __init__(
        self, split: Split, params: dict[str, Any], data_params: dict[str, int], liked_min: float
    ) -> None:
        self.split, self.params, self.liked_min = split, params, liked_min
        self.data = UserItems.from_split(split, **data_params)
        self._inputs: dict[float, csr_matrix] = {}
        self._ease: dict[tuple[float, float], ItemItem] = {}

    def inputs(self, other_weight: float) -> csr_matrix:
        """The training matrix with ratings below `liked_min` weighed `other_weight`."""
        if other_weight not in self._inputs:
            weights = InputWeights(self.liked_min, other_weight)
            self._inputs[other_weight] = self.data.weighted(self.split, weights)
        return self._inputs[other_weight]

    def ease(self, regularization: float, other_weight: float) -> ItemItem:
        key = (regularization, other_weight)
        if key not in self._ease:
            x = self.inputs(other_weight)
            self._ease[key] = ItemItem(self.data, ease(x, regularization), x)
        return self._ease[key]

    def baseline(self, kind: str, chosen: dict[str, Any]) -> Recommend:
        other = float(chosen.get("other_weight", 1.0))
        if kind == "ease":
            return self.ease(float(chosen["regularization"]), other).recommend
        x = self.inputs(other)
        if kind == "rp3beta":
            weights = rp3beta(x, float(chosen["alpha"]), float(chosen["beta"]))
            return ItemItem(self.data, weights, x).recommend
        model = {k: v for k, v in chosen.items() if k != "other_weight"}
        als = {**self.params.get("baseline_als", {}), **model}
        return ALSRanker(self.data, ALSParams(**als), x).recommend

    def hybrid(
        self, attune: AttuneRetrieval, regularization: float
    ) -> Callable[[dict[str, Any]], Recommend]:
        """The hybrid for a choice of `ease_weight` and `other_weight` (the EASE input weight of a
        rating below `liked_min`); Qdrant's candidates are fetched once per user."""
        pool = int(self.params.get("pool", 200))
        candidates: dict[str, list[str]] = {}

        def make(chosen: dict[str, Any]) -> Recommend:
            model = self.ease(regularization, float(chosen["other_weight"]))

            def recommend(user: str, seen: set[str], k: int) -> list[str]:
                if user not in candidates:
                    candidates[user] = attune.recommend(
                        "hybrid", user, seen, pool, frozenset(SOURCES["hybrid"])
                    )
                scores = model.scores(user)
                column = self.data.column
                ease_scores = {m: float(scores[column[m]]) for m in candidates[user] if m in column}
                return rerank(
                    candidates[user],
                    ease_scores,
                    ease_weight=float(chosen["ease_weight"]),
                    rrf_k=int(self.params.get("rrf_k", 60)),
                )[:k]

            return recommend

        return make


def grid_points(params: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    """The system's own grid times the input grid (`other_weight`), shared by every system."""
    grids = params.get("grids", {})
    grid = {
        **DEFAULT_GRIDS[kind],
        **grids.get(kind, {}),
        **DEFAULT_GRIDS["inputs"],
        **grids.get("inputs", {}),
    }
    return [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]


def best_point(
    grid: list[dict[str, Any]], score: Callable[[dict[str, Any]], float], log_to: list[dict]
) -> dict[str, Any]:
    scores = []
    for point in grid:
        scores.append(score(point))
        log_to.append({**point, "validation ndcg": scores[-1]})
    return grid[int(np.argmax(scores))]
