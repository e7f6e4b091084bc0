"""The policy file's bandit priors as Beta priors and as the linear model's belief, and the
margin-weighted reward.

**Cold start**: `bandit_priors` turns the policy file's `bandit_priors: {offer_id: {alpha, beta}}`
into a Beta prior per offer for `tools.bandit.ThompsonSampling` and the same belief for the
linear model: α + β pseudo-observations of reward α/(α + β) on the offer's one-hot coordinate.


Rewards are in [0, 1]: a conversion (0 or 1), or a margin-weighted conversion scaled into [0, 1]
by `margin_reward`. Alternatively, as with Thompson sampling under a priority rule, the reward
stays the conversion and `choose(..., weights=margin_weights)` maximizes predicted conversion ×
margin weight; use one or the other, not both.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from store.linear import LinearPrior
from tools.offer_features import OfferFeatures


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
