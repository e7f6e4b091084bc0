"""Offer selection by a linear contextual bandit: LinTS (default) or LinUCB, with an exploration floor.

The model predicts the reward of showing offer o to person u as x(u, o)·θ, with a ridge posterior
over θ (`store.linear.LinearState`: precision A, mean θ̂ = A⁻¹ b, covariance A⁻¹).

- **LinTS** (`LinearThompson`, policy name `lints`) draws θ̃ ~ N(θ̂, v² A⁻¹) and shows the offer
  with the largest x·θ̃; v is `LinearConfig.scale`, the reward noise level (about √(p(1−p)),
  ≈ 0.2 for conversion rates near 5%). Only the scores of the eligible offers matter, so the
  draw is made directly in score space: s ~ N(X θ̂, v² X A⁻¹ Xᵀ), a k-dimensional Gaussian.
- **LinUCB** (`LinearUCB`, policy name `linucb`) shows the offer with the largest
  x·θ̂ + α √(xᵀ A⁻¹ x), ties broken at random; its action probabilities are exact.
- **Exploration floor**: with probability ε (`LinearConfig.epsilon`, default 0.05) the offer is
  drawn uniformly instead, so every eligible offer keeps at least ε/k probability, whatever the
  model believes; off-policy estimates from the log then never divide by a vanishing propensity.

Probabilities of every eligible offer are logged with each choice: ε/k + (1 − ε)·g(o), where the
ε part is exact and g(o) is exact for LinUCB and a Monte Carlo estimate for LinTS — the share of
`draws` further score samples (default 1,000; standard error at most 1.6 points) in which o has
the largest score. When ε = 0, g is floored at 1/(2·draws) and renormalised so nothing is logged
as impossible.

The features x(u, o) are `tools.offer_features`; the cold-start priors and the margin reward
are `tools.bandit_priors`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from store.linear import LinearState, check_vector


class LinearConfig(BaseModel):
    """How the linear bandit explores; immutable and validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["ts", "ucb"] = "ts"
    epsilon: float = Field(default=0.05, ge=0.0, lt=1.0, description="Share of uniform choices.")
    ridge: float = Field(default=1.0, gt=0.0, description="Prior precision of every coefficient.")
    scale: float = Field(default=0.2, gt=0.0, description="LinTS: reward noise level v.")
    alpha: float = Field(default=0.2, ge=0.0, description="LinUCB: width of the confidence bonus.")
    draws: int = Field(
        default=1000, ge=100, description="LinTS: samples for the propensity estimate."
    )


@dataclass(frozen=True)
class LinearChoice:
    offer_id: str
    propensity: float
    probabilities: dict[str, float]  # P(offer is chosen) for every eligible offer; sums to 1
    estimate: float  # predicted reward of the chosen offer, x·θ̂, clipped to [0, 1]
    stddev: float  # posterior standard deviation of that prediction, v·√(xᵀA⁻¹x)
    features: tuple[float, ...]  # x of the chosen offer: feedback stores it with the reward
    explored: bool  # chosen by the uniform ε part rather than the model
    observations: int  # rewards the state had seen


class LinearBandit(ABC):
    """A linear contextual bandit; the random generator is injected so tests can seed it."""

    name: ClassVar[str]

    def __init__(self, rng: np.random.Generator, config: LinearConfig | None = None) -> None:
        self._rng = rng
        self.config = config or LinearConfig()

    def uniform(self) -> float:
        """A draw in [0, 1) from the same seeded generator (for the holdout's uniform choice)."""
        return float(self._rng.random())

    def choose(
        self,
        contexts: Mapping[str, np.ndarray],
        state: LinearState,
        *,
        weights: Mapping[str, float] | None = None,
    ) -> LinearChoice:
        """Choose one offer among `contexts` ({offer_id: x}) and report the probability of each.

        With `weights` (margin weights by offer id, 1 if missing) the model's choice maximizes
        predicted reward × weight, as `ThompsonSampling.choose` does, with sampled rewards
        floored at 0 first; the probabilities follow it.

        Raises:
            ValueError: no offers, a vector that is not finite or not of the state's dim, or a
                weight that is not positive.
        """
        if not contexts:
            raise ValueError("no eligible offers to choose from")
        ids = sorted(contexts)
        rows = []
        for offer_id in ids:
            try:
                rows.append(check_vector(contexts[offer_id], state.dim))
            except ValueError as error:
                raise ValueError(f"offer {offer_id!r}: {error}") from None
        X = np.vstack(rows)
        scale = np.array([weights.get(i, 1.0) for i in ids]) if weights else np.ones(len(ids))
        if not np.all(scale > 0):
            raise ValueError("offer weights must be positive")
        mean, spread = self._model(X, state)
        explored = bool(self._rng.random() < self.config.epsilon)
        index = (
            int(self._rng.integers(len(ids))) if explored else self._exploit(mean, spread, scale)
        )
        probabilities = self._with_floor(self._greedy_probabilities(mean, spread, scale))
        variance = float(X[index] @ state.covariance @ X[index])
        return LinearChoice(
            offer_id=ids[index],
            propensity=float(probabilities[index]),
            probabilities={i: float(p) for i, p in zip(ids, probabilities, strict=True)},
            estimate=float(np.clip(mean[index], 0.0, 1.0)),
            stddev=self.config.scale * math.sqrt(max(variance, 0.0)),
            features=tuple(float(v) for v in X[index]),
            explored=explored,
            observations=state.observations,
        )

    def pick(self, X: np.ndarray, state: LinearState) -> int:
        """The index of the chosen row of X, without probabilities: for simulations and replays."""
        if self._rng.random() < self.config.epsilon:
            return int(self._rng.integers(X.shape[0]))
        return self._exploit(*self._model(X, state), np.ones(X.shape[0]))

    def _with_floor(self, greedy: np.ndarray) -> np.ndarray:
        epsilon = self.config.epsilon
        if epsilon == 0.0:
            greedy = np.maximum(greedy, 1.0 / (2 * self.config.draws))
            return greedy / greedy.sum()
        return epsilon / greedy.size + (1.0 - epsilon) * greedy

    @abstractmethod
    def _model(self, X: np.ndarray, state: LinearState) -> tuple[np.ndarray, np.ndarray]:
        """The predicted rewards X θ̂ and what the variant needs to explore around them."""

    @abstractmethod
    def _exploit(self, mean: np.ndarray, spread: np.ndarray, scale: np.ndarray) -> int:
        """The model's choice (the row index), each row's score multiplied by its scale."""

    @abstractmethod
    def _greedy_probabilities(
        self, mean: np.ndarray, spread: np.ndarray, scale: np.ndarray
    ) -> np.ndarray:
        """P(_exploit picks each row)."""


class LinearThompson(LinearBandit):
    """LinTS: the largest score under one draw of the posterior."""

    name = "lints"

    def _model(self, X: np.ndarray, state: LinearState) -> tuple[np.ndarray, np.ndarray]:
        mean = X @ state.theta
        covariance = self.config.scale**2 * (X @ state.covariance @ X.T)
        return mean, _square_root(covariance)

    def _exploit(self, mean: np.ndarray, spread: np.ndarray, scale: np.ndarray) -> int:
        scores = _weighted(mean + spread @ self._rng.standard_normal(mean.size), scale)
        best = np.flatnonzero(_best(scores))
        return int(best[0] if best.size == 1 else self._rng.choice(best))

    def _greedy_probabilities(
        self, mean: np.ndarray, spread: np.ndarray, scale: np.ndarray
    ) -> np.ndarray:
        draws = self.config.draws
        scores = mean[:, None] + spread @ self._rng.standard_normal((mean.size, draws))
        best = _best(_weighted(scores, scale[:, None]))
        # A draw in which several offers tie (all at 0 under weights) counts for each equally.
        return (best / best.sum(axis=0)).sum(axis=1) / draws


class LinearUCB(LinearBandit):
    """LinUCB: the largest upper confidence bound x·θ̂ + α√(xᵀA⁻¹x)."""

    name = "linucb"

    def _model(self, X: np.ndarray, state: LinearState) -> tuple[np.ndarray, np.ndarray]:
        mean = X @ state.theta
        width = np.sqrt(np.maximum(((X @ state.covariance) * X).sum(axis=1), 0.0))
        return mean, mean + self.config.alpha * width

    def _exploit(self, mean: np.ndarray, bound: np.ndarray, scale: np.ndarray) -> int:
        best = np.flatnonzero(_best(_weighted(bound, scale)))
        return int(best[0] if best.size == 1 else self._rng.choice(best))

    def _greedy_probabilities(
        self, mean: np.ndarray, bound: np.ndarray, scale: np.ndarray
    ) -> np.ndarray:
        best = _best(_weighted(bound, scale))
        return best / best.sum()


def _weighted(scores: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Scores × margin weights. A conversion rate cannot be negative, so under weights a score
    is floored at 0 first: otherwise a larger weight would push a negative sample further down."""
    if np.all(scale == 1.0):
        return scores
    return np.maximum(scores, 0.0) * scale


def _best(scores: np.ndarray) -> np.ndarray:
    """Which scores tie for the largest (up to rounding), per column."""
    return scores >= scores.max(axis=0) - 1e-12


def linear_bandit(rng: np.random.Generator, config: LinearConfig | None = None) -> LinearBandit:
    """The variant `config.kind` names: LinTS for "ts", LinUCB for "ucb"."""
    config = config or LinearConfig()
    return (LinearThompson if config.kind == "ts" else LinearUCB)(rng, config)


def _square_root(covariance: np.ndarray) -> np.ndarray:
    """R with R Rᵀ = covariance; Cholesky when it is positive definite, else an eigen-root."""
    try:
        return np.linalg.cholesky(covariance)
    except np.linalg.LinAlgError:
        # Two offers with identical vectors make the score covariance singular.
        values, vectors = np.linalg.eigh(covariance)
        return vectors * np.sqrt(np.clip(values, 0.0, None))
