"""Request and response schemas, one per direction, so nothing internal or PII-bearing leaks out."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agents.explain import Explanation
from store.schemas import Channel, Identifier, Item, Profile, Purpose
from tools.schemas import ScoreParts

MAX_BATCH = 1000


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class DecideIn(_In):
    user_id: Identifier | None = None
    anonymous_id: Identifier | None = None
    channel: Channel
    query: str | None = Field(
        None, max_length=1000, description="Free text; pseudonymized before use."
    )
    context: dict[str, str] = Field(default_factory=dict, max_length=20)
    k: int = Field(10, ge=1, le=50)

    @model_validator(mode="after")
    def _has_subject(self) -> DecideIn:
        if self.user_id is None and self.anonymous_id is None:
            raise ValueError("one of user_id or anonymous_id is required")
        if any(len(value) > 500 for value in self.context.values()):
            raise ValueError("context values must be at most 500 characters")
        return self


class ItemOut(BaseModel):
    item_id: str
    title: str
    category: str
    price: float
    currency: str
    score: float
    score_parts: ScoreParts
    reasons: list[str]


class OfferOut(BaseModel):
    offer_id: str
    title: str
    terms: str
    discount_percent: float
    valid_until: str
    propensity: float = Field(description="Probability that the bandit chose this offer.")
    estimate: float = Field(description="Posterior mean conversion rate of the offer.")
    policy: str
    segment: str


class DecideOut(BaseModel):
    decision_id: str
    channel: Channel
    items: list[ItemOut]
    offer: OfferOut | None
    content: str
    explanation: Explanation
    degraded: list[str] = Field(description="Fallbacks used for this decision; empty when none.")
    policy_version: str


class EventsIn(_In):
    events: list[Any] = Field(
        min_length=1, max_length=MAX_BATCH, description="Event objects, validated one by one."
    )


class EventResult(BaseModel):
    index: int
    event_id: str | None
    status: Literal["accepted", "duplicate", "rejected"]
    reason: str | None = None


class EventsOut(BaseModel):
    accepted: int
    duplicates: int
    rejected: int
    results: list[EventResult]


class FeedbackIn(_In):
    decision_id: str = Field(min_length=1, max_length=64)
    reward: float = Field(
        ge=0, le=1, description="1 for a conversion, 0 for none, or a value in between."
    )


class ArmOut(BaseModel):
    offer_id: str
    segment: str
    alpha: float
    beta: float
    rewards_seen: int
    estimate: float


class FeedbackOut(BaseModel):
    decision_id: str
    reward: float
    policy: str = Field(description="The bandit that made the decision and learned from it.")
    arm: ArmOut | None = Field(None, description="Thompson sampling: the offer's new posterior.")
    observations: int | None = Field(
        None, description="Linear bandits: rewarded decisions stored for this policy."
    )


class DecisionOut(BaseModel):
    decision_id: str
    created_at: str
    channel: str
    offer_id: str | None
    reward: float | None
    record: dict[str, Any] = Field(
        description="The logged decision: features, candidates, rules, versions; PII-free."
    )


class UserUpdate(_In):
    profile: Profile | None = None
    consent: dict[Purpose, bool] = Field(default_factory=dict)


class UserOut(BaseModel):
    user_id: str
    profile: Profile
    consent: dict[Purpose, bool]
    features: dict[str, Any]


class CatalogIn(_In):
    items: list[Item] = Field(min_length=1, max_length=MAX_BATCH)


class CatalogOut(BaseModel):
    upserted: int
    item_ids: list[str]
    indexed_total: int


class HealthOut(BaseModel):
    status: Literal["ok", "degraded"]
    database: bool
    vector_backend: str
    indexed_items: int
    embedder: str
    pii: str
    writer: str
    policy_version: str
    auth: Literal["off", "keys"] = Field(description="'off': every caller has every scope.")
    degraded: list[str]
