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

Rewards are in [0, 1]: a conversion (0 or 1), or a margin-weighted conversion scaled into [0, 1]
by `margin_reward`. Alternatively, as with Thompson sampling under a priority rule, the reward
stays the conversion and `choose(..., weights=margin_weights)` maximizes predicted conversion ×
margin weight; use one or the other, not both.

**Features** (`OfferFeatures`; deterministic, dimension = number of offers + 32, fixed by the
offer list, 59 for the 27 demo offers). For person u on a channel and offer o, with discount
level δ = min(discount_percent / 50, 1):

1. one-hot of the offer id (k values): each offer's own base rate, as Thompson sampling has;
2. `match` = share of u's category affinity on o's categories (capped at 1) and `top_match` =
   1 when o covers u's top category (2 values);
3. the person alone (14 values): recency bucket (≤ 7 days, ≤ 30 days, older or never), 30-day
   frequency bucket (0–2, 3–9, ≥ 10 events), price band (low, mid, high, unknown) and channel
   (web, app, email, push), one-hot each. They shift every offer's score equally, so they do not
   change the choice; they keep the other coefficients from absorbing who the person is;
4. δ times each value of 2 and 3 (16 values): how much the discount matters to this person.

**Cold start**: `bandit_priors` turns the policy file's `bandit_priors: {offer_id: {alpha, beta}}`
into a Beta prior per offer for `tools.bandit.ThompsonSampling` and the same belief for the
linear model: α + β pseudo-observations of reward α/(α + β) on the offer's one-hot coordinate.
"""

from __future__ import annotations

import hashlib
import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from store.linear import LinearPrior, LinearState, check_vector

if TYPE_CHECKING:
    from store.events import Features

CHANNELS = ("web", "app", "email", "push")
PRICE_BANDS = ("low", "mid", "high", "unknown")
RECENCY = (("recent", 7.0), ("lapsed", 30.0), ("dormant", math.inf))  # days, inclusive ceilings
FREQUENCY = (("light", 2), ("regular", 9), ("heavy", math.inf))  # events in 30 days
MAX_DISCOUNT_PERCENT = 50.0


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


class OfferFeatures:
    """The feature layout for one offer list: x(user, offer) as documented in the module."""

    def __init__(self, offer_ids: Iterable[str]) -> None:
        self.offer_ids: tuple[str, ...] = tuple(sorted(set(offer_ids)))
        if not self.offer_ids:
            raise ValueError("a feature space needs at least one offer id")
        self._index = {offer_id: i for i, offer_id in enumerate(self.offer_ids)}
        person = (
            [f"recency:{name}" for name, _ in RECENCY]
            + [f"frequency:{name}" for name, _ in FREQUENCY]
            + [f"price:{band}" for band in PRICE_BANDS]
            + [f"channel:{channel}" for channel in CHANNELS]
        )
        contextual = ["match", "top_match", *person]
        self.names: tuple[str, ...] = (
            *(f"offer:{offer_id}" for offer_id in self.offer_ids),
            *contextual,
            *(f"discount*{name}" for name in contextual),
        )
        self.dim = len(self.names)
        # Observations made under one layout mean nothing under another: name the layout.
        self.version = hashlib.sha256("\n".join(self.names).encode()).hexdigest()[:8]

    def index(self, offer_id: str) -> int:
        """The coordinate of the offer's one-hot."""
        try:
            return self._index[offer_id]
        except KeyError:
            raise ValueError(
                f"offer {offer_id!r} is not in this feature space; build OfferFeatures over the "
                "current offer list"
            ) from None

    def person(self, user_features: Mapping[str, Any]) -> np.ndarray:
        """The 14 one-hot values that describe the person alone (part 3 of the layout)."""
        channel = str(user_features.get("channel", ""))
        if channel not in CHANNELS:
            raise ValueError(f"user_features['channel'] must be one of {CHANNELS}, got {channel!r}")
        band = user_features.get("price_band") or "unknown"
        if band not in PRICE_BANDS:
            raise ValueError(
                f"user_features['price_band'] must be one of {PRICE_BANDS}, got {band!r}"
            )
        recency = user_features.get("recency_days")
        recency = math.inf if recency is None else float(recency)
        frequency = int(user_features.get("frequency_30d") or 0)
        values = np.zeros(14)
        values[next(i for i, (_, ceiling) in enumerate(RECENCY) if recency <= ceiling)] = 1.0
        values[3 + next(i for i, (_, top) in enumerate(FREQUENCY) if frequency <= top)] = 1.0
        values[6 + PRICE_BANDS.index(band)] = 1.0
        values[10 + CHANNELS.index(channel)] = 1.0
        return values

    def matrix(
        self, user_features: Mapping[str, Any], offers: Sequence[Mapping[str, Any]]
    ) -> np.ndarray:
        """One row x(user, offer) per offer, in the order given."""
        person = self.person(user_features)
        affinity: Mapping[str, float] = user_features.get("category_affinity") or {}
        top = min(affinity.items(), key=lambda kv: (-kv[1], kv[0]))[0] if affinity else None
        k, n = len(offers), len(self.offer_ids)
        X = np.zeros((k, self.dim))
        contextual = np.empty((k, 16))
        contextual[:, 2:] = person
        discount = np.empty(k)
        for row, offer in enumerate(offers):
            X[row, self.index(offer["offer_id"])] = 1.0
            categories = offer.get("categories") or ()
            contextual[row, 0] = min(1.0, sum(affinity.get(c, 0.0) for c in categories))
            contextual[row, 1] = 1.0 if top is not None and top in categories else 0.0
            discount[row] = min(float(offer["discount_percent"]) / MAX_DISCOUNT_PERCENT, 1.0)
        X[:, n : n + 16] = contextual
        X[:, n + 16 :] = contextual * discount[:, None]
        return X

    def vector(self, user_features: Mapping[str, Any], offer: Mapping[str, Any]) -> np.ndarray:
        return self.matrix(user_features, [offer])[0]

    def contexts(
        self, user_features: Mapping[str, Any], offers: Sequence[Mapping[str, Any]]
    ) -> dict[str, np.ndarray]:
        """{offer_id: x(user, offer)}, the argument of `LinearBandit.choose`."""
        X = self.matrix(user_features, offers)
        return {offer["offer_id"]: X[row] for row, offer in enumerate(offers)}


def offer_features(
    user_features: Mapping[str, Any], offer: Mapping[str, Any], offer_ids: Iterable[str]
) -> np.ndarray:
    """x(user, offer) in the layout of `OfferFeatures(offer_ids)`; build that once to reuse it.

    `user_features` holds `channel` (required), `recency_days`, `frequency_30d`, `price_band` and
    `category_affinity` (missing means a cold person); `offer` holds `offer_id`,
    `discount_percent` and `categories`.
    """
    return OfferFeatures(offer_ids).vector(user_features, offer)


def user_context(features: Features, channel: str) -> dict[str, Any]:
    """The `user_features` of a person from their event features, for `OfferFeatures`."""
    return {
        "channel": channel,
        "recency_days": features.recency_days,
        "frequency_30d": features.frequency_30d,
        "price_band": features.price_band,
        "category_affinity": dict(features.category_affinity),
    }


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


@dataclass(frozen=True)
class BanditPriors:
    """Cold-start beliefs per offer, for both bandits."""

    beta: dict[str, tuple[float, float]]  # (alpha, beta) of every offer, for ThompsonSampling
    linear: LinearPrior  # the same beliefs as pseudo-observations, for the linear state

    def beta_of(self, offer_id: str, default: tuple[float, float]) -> tuple[float, float]:
        return self.beta.get(offer_id, default)


def bandit_priors(
    priors: Mapping[str, Mapping[str, float]],
    space: OfferFeatures,
    *,
    default: tuple[float, float] = (1.0, 1.0),
) -> BanditPriors:
    """Turn the policy file's `bandit_priors: {offer_id: {alpha, beta}}` into both bandits' priors.

    Every offer of `space` gets its own prior or `default` (the policy's `bandit_prior`). A prior
    for an offer outside `space` (retired, say) is kept for Thompson sampling and has no
    coordinate in the linear model.

    Raises:
        ValueError: a prior without a positive finite alpha and beta, or with other keys.
    """
    default = _beta("default", {"alpha": default[0], "beta": default[1]})
    beta = {offer_id: default for offer_id in space.offer_ids}
    beta.update({offer_id: _beta(offer_id, prior) for offer_id, prior in priors.items()})
    coordinates = {
        space.index(offer_id): (a + b, a)
        for offer_id, (a, b) in beta.items()
        if offer_id in space.offer_ids
    }
    return BanditPriors(beta=beta, linear=LinearPrior(coordinates))


def _beta(offer_id: str, prior: Mapping[str, float]) -> tuple[float, float]:
    if set(prior) != {"alpha", "beta"}:
        raise ValueError(
            f"bandit_priors.{offer_id}: give exactly alpha and beta, got {sorted(prior)}"
        )
    alpha, beta = float(prior["alpha"]), float(prior["beta"])
    if not (math.isfinite(alpha) and math.isfinite(beta) and alpha > 0 and beta > 0):
        raise ValueError(f"bandit_priors.{offer_id}: alpha and beta must be positive numbers")
    return alpha, beta


def margin_reward(conversion: float, margin_weight: float, max_margin_weight: float) -> float:
    """A margin-weighted reward in [0, 1]: conversion × margin_weight / max_margin_weight, clipped.

    `max_margin_weight` is a constant of the policy (the largest margin weight in the catalog,
    1.96 for the demo offers): changing it rescales every reward already stored.
    """
    if not max_margin_weight > 0:
        raise ValueError("max_margin_weight must be positive")
    if not (0.0 <= conversion <= 1.0 and margin_weight >= 0.0):
        raise ValueError("conversion must be in [0, 1] and margin_weight non-negative")
    return float(min(1.0, conversion * margin_weight / max_margin_weight))
