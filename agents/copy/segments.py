"""Segments of an audience for marketer copy: a small validated rule language over profile
features, or explicit user ids.

A rule's conditions read the features of `store.events.compute_features` (recency, frequency,
monetary value, purchases, category affinity, price band, and the predictions `attune train`
stores: churn risk, next-purchase probability per category), the lifecycle segment of
`tools.profile.lifecycle_segment`, and the person's age and locale. Every condition given must
hold; an unknown condition, an unknown value or a range whose minimum is above its maximum is a
validation error naming the field.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from store.events import Features
from store.schemas import Identifier

Category = Annotated[str, Field(pattern=r"^[a-z0-9_]+$", min_length=1, max_length=64)]
Locale = Annotated[str, Field(pattern=r"^[a-z]{2}(-[A-Z]{2})?$")]
SegmentName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$", min_length=1, max_length=64)]
MAX_IDS = 10_000


class Lifecycle(StrEnum):
    new = "new"
    active = "active"
    lapsing = "lapsing"
    lapsed = "lapsed"


class PriceBand(StrEnum):
    low = "low"
    mid = "mid"
    high = "high"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


_RANGES = (
    ("purchases", "purchase_count"),
    ("recency_days", "recency_days"),
    ("days_since_purchase", "days_since_last_purchase"),
    ("frequency_30d", "frequency_30d"),
    ("monetary", "monetary_total"),
    ("age", "age"),
    ("churn_risk", "churn_risk"),
)
_NOT_BEHAVIOUR = {"min_age", "max_age", "locale"}


class SegmentRule(_Strict):
    """Who is in a segment: every condition given must hold (an empty rule: everyone).

    A condition that takes a list holds when the person's value is one of the list; a single
    value may be given for a one-element list.
    """

    lifecycle: list[Lifecycle] | None = Field(
        None, description="new (no events), active, lapsing (nothing in 30 days), lapsed (60+)."
    )
    top_category: list[Category] | None = Field(
        None, description="The person's favourite category (largest affinity) is one of these."
    )
    categories_any: list[Category] | None = Field(
        None, description="One of these is among the person's three favourite categories."
    )
    price_band: list[PriceBand] | None = Field(
        None, description="Median price of what they looked at: low < 25, mid < 100, high."
    )
    min_purchases: int | None = Field(None, ge=0)
    max_purchases: int | None = Field(None, ge=0)
    min_recency_days: float | None = Field(None, ge=0, description="Days since the last event.")
    max_recency_days: float | None = Field(None, ge=0)
    min_days_since_purchase: float | None = Field(None, ge=0)
    max_days_since_purchase: float | None = Field(None, ge=0)
    min_frequency_30d: int | None = Field(None, ge=0, description="Events in the last 30 days.")
    max_frequency_30d: int | None = Field(None, ge=0)
    min_monetary: float | None = Field(None, ge=0, description="Total spent.")
    max_monetary: float | None = Field(None, ge=0)
    min_age: int | None = Field(None, ge=0, le=130, description="People of unknown age: never.")
    max_age: int | None = Field(None, ge=0, le=130)
    locale: list[Locale] | None = Field(
        None, description="Languages or locales (en, en-GB): an `en` entry fits en-GB and en-US."
    )
    # Predictions `attune train` stores (agents.predictions); without one, no bound holds.
    min_churn_risk: float | None = Field(
        None, ge=0, le=1, description="Predicted chance of no purchase in their usual interval."
    )
    max_churn_risk: float | None = Field(None, ge=0, le=1)
    likely_to_buy: list[Category] | None = Field(
        None,
        description="Predicted next-purchase probability of at least min_next_purchase in "
        "one of these categories.",
    )
    min_next_purchase: float = Field(0.2, gt=0, le=1)

    @field_validator(
        "lifecycle",
        "top_category",
        "categories_any",
        "price_band",
        "locale",
        "likely_to_buy",
        mode="before",
    )
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [value]
        if isinstance(value, list) and not value:
            raise ValueError("give at least one value, or leave the condition out")
        return value

    @model_validator(mode="after")
    def _ranges_are_ordered(self) -> SegmentRule:
        for name, _ in _RANGES:
            low, high = getattr(self, f"min_{name}"), getattr(self, f"max_{name}")
            if low is not None and high is not None and low > high:
                raise ValueError(f"min_{name} ({low}) is above max_{name} ({high})")
        return self

    @property
    def uses_features(self) -> bool:
        """Whether the rule reads behavioural features (which need profiling consent)."""
        given = self.model_dump(exclude_none=True, exclude_defaults=True)
        return any(key not in _NOT_BEHAVIOUR for key in given)

    def categories(self) -> set[str]:
        return set(self.top_category or ()) | set(self.categories_any or ())

    def matches(self, member: Member) -> bool:
        features = member.features
        if self.lifecycle and member.lifecycle not in self.lifecycle:
            return False
        favourites = features.top_categories(3)
        if self.top_category and (not favourites or favourites[0] not in self.top_category):
            return False
        if self.categories_any and not set(favourites) & set(self.categories_any):
            return False
        if self.price_band and features.price_band not in self.price_band:
            return False
        if self.locale and not locale_fits(member.locale, self.locale):
            return False
        if self.likely_to_buy and not any(
            features.next_purchase.get(c, 0.0) >= self.min_next_purchase for c in self.likely_to_buy
        ):
            return False
        values = {
            "purchase_count": features.purchase_count,
            "recency_days": features.recency_days,
            "days_since_last_purchase": features.days_since_last_purchase,
            "frequency_30d": features.frequency_30d,
            "monetary_total": features.monetary_total,
            "age": member.age,
            "churn_risk": features.churn_risk,
        }
        for name, attribute in _RANGES:
            low, high = getattr(self, f"min_{name}"), getattr(self, f"max_{name}")
            if low is None and high is None:
                continue
            value = values[attribute]
            if value is None:  # never seen, never bought, age unknown: no bound can hold
                return False
            if (low is not None and value < low) or (high is not None and value > high):
                return False
        return True

    def describe(self) -> str:
        """The rule in words, for explanations."""
        parts = []
        if self.lifecycle:
            parts.append(f"lifecycle {' or '.join(self.lifecycle)}")
        if self.top_category:
            parts.append(f"favourite category {' or '.join(self.top_category)}")
        if self.categories_any:
            parts.append(f"{' or '.join(self.categories_any)} among their top 3 categories")
        if self.price_band:
            parts.append(f"price band {' or '.join(self.price_band)}")
        words = {
            "purchases": "purchases",
            "recency_days": "days since their last visit",
            "days_since_purchase": "days since their last purchase",
            "frequency_30d": "events in 30 days",
            "monetary": "spent in total",
            "age": "years old",
            "churn_risk": "churn risk",
        }
        for name, _ in _RANGES:
            low, high = getattr(self, f"min_{name}"), getattr(self, f"max_{name}")
            if low is not None and high is not None:
                parts.append(f"{low:g} to {high:g} {words[name]}")
            elif low is not None:
                parts.append(f"at least {low:g} {words[name]}")
            elif high is not None:
                parts.append(f"at most {high:g} {words[name]}")
        if self.likely_to_buy:
            parts.append(
                f"likely ({self.min_next_purchase:g}+) to buy {' or '.join(self.likely_to_buy)}"
            )
        if self.locale:
            parts.append(f"locale {' or '.join(self.locale)}")
        return ", ".join(parts) or "everyone"


class Segment(_Strict):
    """A named part of the audience: a rule, or an explicit list of user ids."""

    name: SegmentName
    rule: SegmentRule | None = None
    user_ids: list[Identifier] | None = Field(None, min_length=1, max_length=MAX_IDS)

    @model_validator(mode="after")
    def _rule_or_ids(self) -> Segment:
        if (self.rule is None) == (self.user_ids is None):
            raise ValueError("give a segment either a rule or user_ids")
        return self

    def describe(self) -> str:
        if self.rule is not None:
            return self.rule.describe()
        return f"{len(set(self.user_ids or ()))} people named by id"


class Audience(_Strict):
    """Who the copy is for: segments, or one list of user ids (a segment named `users`)."""

    segments: list[Segment] | None = Field(None, min_length=1, max_length=20)
    user_ids: list[Identifier] | None = Field(None, min_length=1, max_length=MAX_IDS)

    @model_validator(mode="after")
    def _segments_or_ids(self) -> Audience:
        if (self.segments is None) == (self.user_ids is None):
            raise ValueError("give the audience either segments or user_ids")
        names = [s.name for s in self.segments or ()]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"segment names must be unique; used twice: {', '.join(twice)}")
        return self

    def resolved(self) -> list[Segment]:
        if self.segments is not None:
            return list(self.segments)
        return [Segment(name="users", user_ids=self.user_ids)]


@dataclass(frozen=True)
class Member:
    """A person as a segment rule sees them: features and a few profile facts, no PII."""

    features: Features
    lifecycle: str
    age: int | None
    locale: str | None


def locale_fits(locale: str | None, wanted: Sequence[str]) -> bool:
    if locale is None:
        return False
    language = locale.split("-")[0]
    return any(w == locale or ("-" not in w and w == language) for w in wanted)
