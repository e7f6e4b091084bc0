"""Strong baselines for the ranking suite, the EASE re-ranking stage of Attune's hybrid, and the
bootstrap over users that puts confidence intervals on every figure.

- `ease`: EASE^R (Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019), the
  closed form B = I - P·diag(1/diag(P)), P = (XᵀX + λI)⁻¹, zero diagonal;
- `rp3beta`: RP3beta (Paudel et al., "Updatable, Accurate, Diverse, and Scalable Recommendations
  for Interactive Applications", TiiS 2017): three-step random walk user → item → user → item
  with transition probabilities raised to α, the arrival item's score divided by its
  popularity^β;
- ALS from `implicit`, through `retrieval.collab.fit` as the service trains it.

All three, and the EASE stage of the hybrid, read the training interactions through the same
`InputWeights`: a rating of `liked_min` or more counts 1, a lower one `other_weight` (0 drops
it), times `decay`**age for recency (age 0 = the user's newest rating). `other_weight` is a tuned
hyperparameter of every one of them, chosen on the same validation split, and so is `decay` (tried
at each system's best point), so no system gets an input filter the others are denied.

All three score the items of a `UserItems` matrix: the training interactions, restricted to items
with at least `min_count` users (and at most `max_items` of them, the most popular), so that a
larger MovieLens release only grows the item-item matrices up to that cap. Items outside score
nothing; the most-popular list fills a short top-k.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.sparse import csr_matrix, diags

from evals.movielens import Rating, Split, popularity
from retrieval.collab import ALSParams, Interactions, fit
from retrieval.sequence import ease_weights

Weight = Callable[[Rating, int], float]
"""The weight of one training rating, given the rating and its age (0 = the user's newest)."""


def binary(rating: Rating, age: int) -> float:
    return 1.0


@dataclass(frozen=True)
class InputWeights:
    """How much one training rating counts as a positive: 1 from `liked_min` up, `other_weight`
    below it (0 leaves the rating out), times `decay`**age (age 0 = the user's newest rating;
    decay 1 weighs every rating alike)."""

    liked_min: float = 4.0
    other_weight: float = 1.0
    decay: float = 1.0

    def __call__(self, rating: Rating, age: int) -> float:
        base = 1.0 if rating.rating >= self.liked_min else self.other_weight
        return base * self.decay**age


@dataclass
class UserItems:
    """Training interactions as a users x items matrix, with the ids of rows and columns."""

    users: list[str]
    items: list[str]
    x: csr_matrix
    by_popularity: list[str]  # every movie rated in training, most rated first

    @classmethod
    def from_split(cls, split: Split, *, min_count: int = 2, max_items: int = 10_000) -> UserItems:
        counts = popularity(split)
        by_popularity = sorted(counts, key=lambda m: (-counts[m], m))
        items = sorted(m for m in by_popularity[:max_items] if counts[m] >= min_count)
        users = sorted(split.train)
        matrix = cls(users, items, csr_matrix((len(users), len(items))), by_popularity)
        matrix.x = matrix.weighted(split, binary)
        return matrix

    def __post_init__(self) -> None:
        self.row = {user: i for i, user in enumerate(self.users)}
        self.column = {item: j for j, item in enumerate(self.items)}

    def weighted(self, split: Split, weight: Weight) -> csr_matrix:
        """The matrix with each (user, item) set to `weight` of the user's latest rating of it."""
        rows, cols, vals = [], [], []
        for user in self.users:
            ratings = split.train[user]
            for position, rating in enumerate(ratings):
                column = self.column.get(rating.movie)
                if column is not None:
                    rows.append(self.row[user])
                    cols.append(column)
                    vals.append(weight(rating, len(ratings) - 1 - position))
        # Later duplicates overwrite earlier ones: the newest rating of a movie counts.
        dense_keys = np.asarray(rows, dtype=np.int64) * len(self.items) + np.asarray(cols)
        _, last = np.unique(dense_keys[::-1], return_index=True)
        keep = len(rows) - 1 - last
        matrix = csr_matrix(
            (
                np.asarray(vals, dtype=np.float32)[keep],
                (np.asarray(rows)[keep], np.asarray(cols)[keep]),
            ),
            shape=(len(self.users), len(self.items)),
        )
        matrix.eliminate_zeros()  # a weight of 0 is no interaction, for every model alike
        return matrix

    def top_k(self, scores: np.ndarray, seen: set[str], k: int) -> list[str]:
        """The k best-scored unseen items (positive scores only), then the most popular."""
        order = np.argsort(-scores, kind="stable")
        out: list[str] = []
        for j in order:
            if scores[j] <= 0 or len(out) == k:
                break
            if self.items[j] not in seen:
                out.append(self.items[j])
        taken = set(out)
        for movie in self.by_popularity:
            if len(out) == k:
                break
            if movie not in seen and movie not in taken:
                out.append(movie)
        return out


def ease(x: csr_matrix, regularization: float) -> np.ndarray:
    """EASE^R's item-item weights B (items x items, float32, zero diagonal) in closed form: the
    service's own (`retrieval.sequence.ease_weights`)."""
    return ease_weights(x, regularization)


def rp3beta(x: csr_matrix, alpha: float, beta: float) -> np.ndarray:
    """RP3beta's item-item weights W (items x items): W[i, j] = Σ_u P(u|i)^α P(j|u)^α / pop(j)^β.

    The walk follows each edge in proportion to its weight in `x` (on a 0/1 matrix, the paper's
    uniform steps); pop(j) is the number of users who have j."""
    x = x.tocsr(copy=True)
    x.eliminate_zeros()
    user_degree = np.asarray(x.sum(axis=1)).ravel()
    item_weight = np.asarray(x.sum(axis=0)).ravel()
    item_degree = np.diff(x.tocsc().indptr).astype(np.float64)
    user_to_item = diags(1 / np.maximum(user_degree, 1e-12)) @ x  # P(j | u)
    item_to_user = diags(1 / np.maximum(item_weight, 1e-12)) @ x.T.tocsr()  # P(u | i)
    user_to_item.data **= alpha
    item_to_user.data **= alpha
    walk = np.asarray((item_to_user @ user_to_item).todense(), dtype=np.float32)
    walk /= np.maximum(item_degree, 1)[None, :] ** beta
    np.fill_diagonal(walk, 0.0)
    return walk


class ItemItem:
    """A linear item-item recommender (EASE^R, RP3beta): scores = the user's row @ W."""

    def __init__(self, data: UserItems, weights: np.ndarray, x: csr_matrix | None = None) -> None:
        self.data, self.weights = data, weights
        self.x = data.x if x is None else x

    def scores(self, user: str) -> np.ndarray:
        row = self.x[self.data.row[user]]
        return np.asarray(row @ self.weights).ravel()

    def recommend(self, user: str, seen: set[str], k: int) -> list[str]:
        return self.data.top_k(self.scores(user), seen, k)


class ALSRanker:
    """ALS (implicit) on the training matrix (`x`, the binary one by default): scores = user
    factor · item factors."""

    def __init__(self, data: UserItems, params: ALSParams, x: csr_matrix | None = None) -> None:
        self.data = data
        coo = (data.x if x is None else x).tocoo()
        model = fit(
            Interactions(
                data.users,
                data.items,
                csr_matrix((coo.data, (coo.row, coo.col)), shape=data.x.shape),
            ),
            params,
        )
        self.user_factors, self.item_factors = model.user_factors, model.item_factors

    def recommend(self, user: str, seen: set[str], k: int) -> list[str]:
        factors = self.user_factors[self.data.row[user]]
        if not factors.any():  # nothing counted for this user: the most popular
            return self.data.top_k(np.zeros(len(self.data.items)), seen, k)
        scores = self.item_factors @ factors
        return self.data.top_k(scores - scores.min() + 1e-6, seen, k)


@dataclass(frozen=True)
class Interval:
    value: float
    low: float
    high: float

    def text(self) -> str:
        return f"{self.value:.4f} [{self.low:.4f}, {self.high:.4f}]"


def bootstrap_mean(
    values: np.ndarray, *, resamples: int, seed: int, level: float = 0.95
) -> Interval:
    """The mean with a percentile bootstrap confidence interval (resampling users)."""
    values = np.asarray(values, dtype=np.float64)
    draws = np.random.default_rng(seed).integers(0, len(values), (resamples, len(values)))
    means = values[draws].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return Interval(float(values.mean()), float(low), float(high))


def bootstrap_ratio(
    numerator: np.ndarray,
    denominator: np.ndarray,
    *,
    resamples: int,
    seed: int,
    level: float = 0.95,
) -> Interval:
    """mean(numerator) / mean(denominator) over paired per-user values, with a percentile
    bootstrap interval: each resample draws the same users for both."""
    a = np.asarray(numerator, dtype=np.float64)
    b = np.asarray(denominator, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError("the two systems must be scored on the same users")
    draws = np.random.default_rng(seed).integers(0, len(a), (resamples, len(a)))
    ratios = a[draws].mean(axis=1) / np.maximum(b[draws].mean(axis=1), 1e-12)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(ratios, [tail, 100 - tail])
    return Interval(float(a.mean() / b.mean()), float(low), float(high))
