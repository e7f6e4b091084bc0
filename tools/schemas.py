"""Typed inputs and outputs of the agent's tools. Nothing here carries PII."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from store.schemas import Purpose


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RuleFired(_Model):
    rule_id: str
    effect: Literal["constrained", "removed", "blocked"]
    reason: str
    targets: list[str] = Field(default_factory=list)


class ProfileView(_Model):
    """A person as the tools see them: features and consent, no name, email, phone or address."""

    subject_key: str
    user_id: str | None
    known: bool = Field(description="Whether a profile exists for this subject.")
    age: int | None
    consent: dict[Purpose, bool]
    personalized: bool = Field(description="Whether consent allows personalized ranking.")
    segment: str
    event_count: int
    recency_days: float | None
    frequency_30d: int
    monetary_total: float
    purchase_count: int
    days_since_last_purchase: float | None
    category_affinity: dict[str, float]
    price_band: str | None
    recent_item_ids: list[str]
    churn_risk: float | None = Field(
        None, description="Predicted chance of no purchase within the person's usual interval."
    )
    next_purchase: dict[str, float] = Field(
        default_factory=dict, description="Predicted chance of a purchase, per category."
    )
    rules_fired: list[RuleFired] = Field(default_factory=list)


class RetrieveInput(_Model):
    query: str | None = Field(None, description="What the person asked for, already pseudonymized.")
    k: int = Field(10, ge=1, le=50)


class ScoreParts(_Model):
    """The shares of a candidate's score by source (vector retrieval), or its popularity and
    category affinity (the popularity path); with the item-item re-ranking, its terms too."""

    query: float | None = None
    taste: float | None = None
    collab: float | None = None
    recent: float | None = None
    affinity: float | None = None
    popularity: float | None = None
    # The item-item re-ranking's terms (`retrieval.sequence`), set only when it ordered the
    # candidates: EASE^R over the person's history, and next-item transitions from their recent
    # items (each scaled to at most 1 among the candidates); the candidate's score is their sum
    # (plus the model's own weight on Qdrant's order, `ItemItemParams.qdrant_weight`).
    ease: float | None = None
    sequence: float | None = None


class Candidate(_Model):
    item_id: str
    title: str
    category: str
    price: float
    currency: str
    score: float
    parts: ScoreParts
    reasons: list[str]


class Candidates(_Model):
    strategy: Literal["hybrid", "query", "taste", "collab", "recent", "popular"]
    items: list[Candidate]
    rules_fired: list[RuleFired]
    degraded: list[str] = Field(default_factory=list)


class EligibleOffersInput(_Model):
    item_ids: list[str] = Field(description="The recommended items the offer should apply to.")


class OfferSummary(_Model):
    offer_id: str
    title: str
    terms: str
    discount_percent: float
    categories: list[str]
    valid_until: str


class EligibleOffers(_Model):
    considered: int
    candidates: list[str] = Field(default_factory=list, description="Every offer considered.")
    cap_rules: list[str] = Field(
        default_factory=list, description="Ids of the frequency-cap rules (the 'capped' stage)."
    )
    offers: list[OfferSummary]
    removed: dict[str, list[str]] = Field(
        description="Offer id to the ids of the rules that removed it."
    )
    rules_fired: list[RuleFired]


class SelectOfferInput(_Model):
    offer_ids: list[str] = Field(min_length=1)


class OfferChoice(_Model):
    offer_id: str
    policy: str
    segment: str
    propensity: float = Field(ge=0, le=1)
    probabilities: dict[str, float]
    estimate: float = Field(description="Posterior mean conversion rate of the chosen offer.")
    alpha: float = Field(0.0, description="Beta posterior (Thompson sampling only).")
    beta: float = 0.0
    rewards_seen: int
    stddev: float | None = Field(None, description="Uncertainty of the estimate (linear bandits).")
    features: list[float] | None = Field(
        None,
        description="The chosen offer's context vector (linear bandits): feedback learns from it.",
    )
    priority: str | None = Field(None, description="The priority rule that weighted the choice.")
    experiment: str | None = Field(None, description="The holdout rule whose control this is.")


class PolicyCheckInput(_Model):
    item_ids: list[str]
    offer_id: str | None = None


class PolicyCheck(_Model):
    allowed: bool
    violations: list[RuleFired]
