"""The linear contextual bandits as the service runs them: one model per variant, the feature
layout of the current offer set, and a cache of the observations every worker shares.

A surface (channel) uses one when the policy file says so (`bandits: {app: lints}`). Its policy
name carries the layout's version (`lints@1a2b3c4d`), so a new offer set starts a new model from
the priors instead of misreading old vectors; its segment is `all`, since the channel is already
one of the features.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
from sqlalchemy import Connection
from sqlalchemy.orm import Session

from store.linear import LinearPrior, ObservationCache, load_state
from store.schemas import Offer
from tools.bandit_priors import bandit_priors
from tools.linear import LinearBandit, LinearChoice, LinearConfig, linear_bandit
from tools.offer_features import OfferFeatures

SEGMENT = "all"
KINDS: dict[str, Literal["ts", "ucb"]] = {"lints": "ts", "linucb": "ucb"}


class ContextualBandits:
    def __init__(self, rng: np.random.Generator) -> None:
        self._bandits: dict[str, LinearBandit] = {
            name: linear_bandit(rng, LinearConfig(kind=kind)) for name, kind in KINDS.items()
        }
        self.cache = ObservationCache()
        self._space: OfferFeatures | None = None
        # The linear prior last derived, with the layout, the policy's priors and default it
        # came from (`_prior`).
        self._prior: tuple[OfferFeatures, tuple[object, ...], LinearPrior] | None = None
        self._lock = threading.Lock()

    def bandit(self, kind: str) -> LinearBandit:
        """The process's bandit of a variant (`lints`, `linucb`), e.g. for `tools.rank`."""
        return self._bandits[kind]

    def space(self, offer_ids: Sequence[str]) -> OfferFeatures:
        """The feature layout over every current offer (not only the eligible ones)."""
        with self._lock:
            if self._space is None or set(self._space.offer_ids) != set(offer_ids):
                self._space = OfferFeatures(offer_ids)
            return self._space

    def choose(
        self,
        session: Session | Connection,
        kind: str,
        *,
        user: Mapping[str, object],
        eligible: Sequence[Offer],
        all_offer_ids: Sequence[str],
        priors: Mapping[str, Mapping[str, float]],
        default_prior: tuple[float, float],
        weights: Mapping[str, float] | None,
    ) -> tuple[str, LinearChoice]:
        """(policy name, choice) for a person among the eligible offers."""
        bandit = self._bandits[kind]
        space = self.space(all_offer_ids)
        prior = self._linear_prior(space, priors, default_prior)
        policy = f"{kind}@{space.version}"
        state = load_state(
            session, policy, SEGMENT, space.dim, bandit.config.ridge, prior=prior, cache=self.cache
        )
        # Only the three fields the layout reads, not a JSON dump of every offer.
        described = [
            {
                "offer_id": o.offer_id,
                "discount_percent": o.discount_percent,
                "categories": o.categories,
            }
            for o in eligible
        ]
        contexts = space.contexts(user, described)
        return policy, bandit.choose(contexts, state, weights=weights)

    def _linear_prior(
        self,
        space: OfferFeatures,
        priors: Mapping[str, Mapping[str, float]],
        default: tuple[float, float],
    ) -> LinearPrior:
        """The policy's priors over `space`, derived again only when the layout (by identity:
        `space` hands out one until the offer set changes) or the priors change. Deriving them
        gives each of the current offers a prior, on every app decision otherwise."""
        made_of = (tuple((k, tuple(v.items())) for k, v in priors.items()), default)
        held = self._prior
        if held is not None and held[0] is space and held[1] == made_of:
            return held[2]
        prior = bandit_priors(priors, space, default=default).linear
        self._prior = (space, made_of, prior)  # one assignment: safe between threads
        return prior
