"""Tuning on the validation split: the grids, and the best point of each system's grid.

Fairness: the input weighting is not the hybrid's privilege. `other_weight` is a hyperparameter
of EASE^R, RP3beta and ALS too, searched over the same grid (`grids.inputs`) on the same
validation split; each system's own grid is multiplied by it. Recency weighting (`decay`**age on
each rating, `grids.recency`) is tried at each baseline's best point and kept where it wins.

Tuning: every tuned choice (EASE's λ, RP3beta's α and β, ALS's factors and regularization, the
baselines' recency decay, the hybrid's `transition_weight` and `qdrant_weight`, and every one's
`other_weight`) is made on a validation split carved from the training part only
(`evals.movielens.validation_split`); the test split only scores. The transition model's
window and scoring (`params.sequence`) were chosen on that validation split too.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, replace
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
    rp3beta,
)
from retrieval.collab import ALSParams
from retrieval.sequence import ItemItemModel, ItemItemParams, fuse, transition_matrix

BASELINE_TYPES = {"popularity", "item-knn", "ease", "rp3beta", "als"}
TUNED_TYPES = {"ease", "rp3beta", "als", "hybrid"}
DEFAULT_GRIDS: dict[str, dict[str, list[Any]]] = {
    "ease": {"regularization": [200.0, 500.0]},
    "rp3beta": {"alpha": [0.25, 0.5, 1.0], "beta": [0.1, 0.3, 0.6]},
    "als": {"factors": [32, 64, 128], "regularization": [0.01, 0.1], "alpha": [2.0, 10.0]},
    "hybrid": {
        "transition_weight": [0.0, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.5, 2.0],
        "qdrant_weight": [0.0, 0.1],
    },
    "inputs": {"other_weight": [0.0, 0.1, 0.3, 1.0]},
    "recency": {"decay": [1.0, 0.99, 0.95]},
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
        self._inputs: dict[tuple[float, float], csr_matrix] = {}
        self._ease: dict[tuple[float, float, float], ItemItem] = {}
        self._transitions: csr_matrix | None = None

    def inputs(self, other_weight: float, decay: float = 1.0) -> csr_matrix:
        """The training matrix with ratings below `liked_min` weighed `other_weight`, each rating
        times `decay`**age (age 0 = the user's newest)."""
        key = (other_weight, decay)
        if key not in self._inputs:
            weights = InputWeights(self.liked_min, other_weight, decay)
            self._inputs[key] = self.data.weighted(self.split, weights)
        return self._inputs[key]

    def ease(self, regularization: float, other_weight: float, decay: float = 1.0) -> ItemItem:
        key = (regularization, other_weight, decay)
        if key not in self._ease:
            x = self.inputs(other_weight, decay)
            self._ease[key] = ItemItem(self.data, ease(x, regularization), x)
        return self._ease[key]

    def baseline(self, kind: str, chosen: dict[str, Any]) -> Recommend:
        other = float(chosen.get("other_weight", 1.0))
        decay = float(chosen.get("decay", 1.0))
        if kind == "ease":
            return self.ease(float(chosen["regularization"]), other, decay).recommend
        x = self.inputs(other, decay)
        if kind == "rp3beta":
            weights = rp3beta(x, float(chosen["alpha"]), float(chosen["beta"]))
            return ItemItem(self.data, weights, x).recommend
        model = {k: v for k, v in chosen.items() if k not in {"other_weight", "decay"}}
        als = {**self.params.get("baseline_als", {}), **model}
        return ALSRanker(self.data, ALSParams(**als), x).recommend

    def served(self) -> ItemItemParams:
        """The service's item-item parameters (`ItemItemParams`' defaults, which are what
        `agents.services.itemitem_params` serves), with any the suite file overrides
        (`params.sequence`: window, last, decay; `params.pool`; `params.rrf_k`)."""
        sequence = self.params.get("sequence", {})
        overrides = {key: sequence[key] for key in ("window", "last", "decay") if key in sequence}
        overrides |= {key: self.params[key] for key in ("pool", "rrf_k") if key in self.params}
        return replace(ItemItemParams(), **overrides)

    def transitions(self) -> csr_matrix:
        """Next-item transitions over every user's time-ordered training ratings (all of them:
        that a movie came next is the signal, whatever its rating)."""
        if self._transitions is None:
            window = self.served().window
            self._transitions = transition_matrix(
                ([(r.movie, 1.0) for r in self.split.train[user]] for user in self.data.users),
                self.data.column,
                window=window,
            )
        return self._transitions

    def item_item(
        self, regularization: float, chosen: dict[str, Any]
    ) -> tuple[ItemItemModel, InputWeights]:
        """The service's re-ranking model (`retrieval.sequence`) on this split's training part,
        with EASE fitted on the `other_weight` input, and the weights of a user's history."""
        other = float(chosen["other_weight"])
        params = replace(
            self.served(),
            regularization=regularization,
            transition_weight=float(chosen["transition_weight"]),
            qdrant_weight=float(chosen["qdrant_weight"]),
        )
        ease_model = self.ease(regularization, other)
        model = ItemItemModel(self.data.items, ease_model.weights, self.transitions(), params)
        return model, InputWeights(self.liked_min, other)

    def hybrid(
        self, attune: AttuneRetrieval, regularization: float
    ) -> Callable[[dict[str, Any]], Recommend]:
        """The hybrid for a point of its grid (`transition_weight`, `qdrant_weight`,
        `other_weight`): Qdrant's candidates, fetched once per user, re-ranked by the service's
        item-item model. The candidates' EASE and transition scores are computed once per user
        and `other_weight`; a grid point only re-fuses them."""
        pool = self.served().pool
        candidates: dict[str, list[str]] = {}
        scores: dict[tuple[str, float], tuple[np.ndarray, np.ndarray]] = {}

        def make(chosen: dict[str, Any]) -> Recommend:
            model, weigh = self.item_item(regularization, chosen)
            other = float(chosen["other_weight"])

            def recommend(user: str, seen: set[str], k: int) -> list[str]:
                if user not in candidates:
                    candidates[user] = attune.recommend(
                        "hybrid", user, seen, pool, frozenset(SOURCES["hybrid"])
                    )
                if (user, other) not in scores:
                    ratings = self.split.train[user]
                    history = [
                        (r.movie, weigh(r, len(ratings) - 1 - i)) for i, r in enumerate(ratings)
                    ]
                    scores[user, other] = model.candidate_scores(candidates[user], history)
                ease_scores, transition_scores = scores[user, other]
                return fuse(
                    candidates[user],
                    ease_scores,
                    transition_scores,
                    transition_weight=model.params.transition_weight,
                    qdrant_weight=model.params.qdrant_weight,
                    rrf_k=model.params.rrf_k,
                )[:k]

            return recommend

        return make


def recency_points(params: dict[str, Any], best: dict[str, Any]) -> list[dict[str, Any]]:
    """The best point of a system's grid with each `decay` of the recency grid (1 = none)."""
    decays = {**DEFAULT_GRIDS["recency"], **params.get("grids", {}).get("recency", {})}["decay"]
    return [{**best, "decay": float(decay)} for decay in decays]


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
