"""The linear bandit's features of a person and an offer (`OfferFeatures`).

Deterministic, dimension = number of offers + 36, fixed by the
offer list, 63 for the 27 demo offers). For person u on a channel and offer o, with discount
level δ = min(discount_percent / 50, 1):

1. one-hot of the offer id (k values): each offer's own base rate, as Thompson sampling has;
2. `match` = share of u's category affinity on o's categories (capped at 1) and `top_match` =
   1 when o covers u's top category (2 values);
3. the person alone (14 values): recency bucket (≤ 7 days, ≤ 30 days, older or never), 30-day
   frequency bucket (0–2, 3–9, ≥ 10 events), price band (low, mid, high, unknown) and channel
   (web, app, email, push), one-hot each. They shift every offer's score equally, so they do not
   change the choice; they keep the other coefficients from absorbing who the person is;
4. the predictions `attune train` stores (2 values, 0 until it has run): the person's churn risk,
   and `predicted` = the largest next-purchase probability among o's categories;
5. δ times each value of 2, 3 and 4 (18 values): how much the discount matters to this person.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from store.events import Features


CHANNELS = ("web", "app", "email", "push")
PRICE_BANDS = ("low", "mid", "high", "unknown")
RECENCY = (("recent", 7.0), ("lapsed", 30.0), ("dormant", math.inf))  # days, inclusive ceilings
FREQUENCY = (("light", 2), ("regular", 9), ("heavy", math.inf))  # events in 30 days
MAX_DISCOUNT_PERCENT = 50.0


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
        contextual = ["match", "top_match", *person, "churn_risk", "predicted"]
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
        width = 2 + len(person) + 2
        contextual = np.empty((k, width))
        contextual[:, 2:16] = person
        contextual[:, 16] = float(user_features.get("churn_risk") or 0.0)
        predicted: Mapping[str, float] = user_features.get("next_purchase") or {}
        discount = np.empty(k)
        for row, offer in enumerate(offers):
            X[row, self.index(offer["offer_id"])] = 1.0
            categories = offer.get("categories") or ()
            contextual[row, 0] = min(1.0, sum(affinity.get(c, 0.0) for c in categories))
            contextual[row, 1] = 1.0 if top is not None and top in categories else 0.0
            contextual[row, 17] = max((predicted.get(c, 0.0) for c in categories), default=0.0)
            discount[row] = min(float(offer["discount_percent"]) / MAX_DISCOUNT_PERCENT, 1.0)
        X[:, n : n + width] = contextual
        X[:, n + width :] = contextual * discount[:, None]
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

    `user_features` holds `channel` (required), `recency_days`, `frequency_30d`, `price_band`,
    `category_affinity`, `churn_risk` and `next_purchase` (missing means a cold person); `offer` holds `offer_id`,
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
        "churn_risk": features.churn_risk,
        "next_purchase": dict(features.next_purchase),
    }
