"""What the client returns: the API's answers as pydantic models. Each keeps fields it does not
name (`extra="allow"`), so a newer server's additions reach the caller instead of breaking it."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict


class _Out(BaseModel):
    model_config = ConfigDict(extra="allow")


class Item(_Out):
    item_id: str
    title: str
    category: str
    price: float
    currency: str
    score: float
    reasons: list[str]


class Offer(_Out):
    offer_id: str
    title: str
    terms: str
    discount_percent: float
    valid_until: str
    propensity: float
    estimate: float
    policy: str
    segment: str


class Explanation(_Out):
    summary: str
    reasons: list[dict[str, Any]]
    rules_fired: list[dict[str, Any]]


class Decision(_Out):
    decision_id: str
    channel: str
    items: list[Item]
    offer: Offer | None
    content: str
    explanation: Explanation
    degraded: list[str]
    policy_version: str


class ChatAnswer(_Out):
    decision_id: str
    thread_id: str
    items: list[Item]
    offer: Offer | None
    explanation: Explanation
    reply: str
    degraded: list[str]


class ChatEvent(_Out):
    """One event of a streamed chat turn: `tool`, `token`, `reset` (drop the tokens received so
    far: the reply was replaced) or `final` (`answer` holds the whole turn)."""

    event: Literal["tool", "token", "reset", "final"]
    data: dict[str, Any]

    @property
    def text(self) -> str:
        return str(self.data.get("text", "")) if self.event == "token" else ""

    @property
    def answer(self) -> ChatAnswer | None:
        return ChatAnswer.model_validate(self.data) if self.event == "final" else None


class EventResult(_Out):
    index: int
    event_id: str | None
    status: Literal["accepted", "duplicate", "rejected"]
    reason: str | None = None


class EventsResult(_Out):
    accepted: int
    duplicates: int
    rejected: int
    results: list[EventResult]


class Feedback(_Out):
    decision_id: str
    reward: float
    policy: str
    arm: dict[str, Any] | None = None
    observations: int | None = None


class User(_Out):
    user_id: str
    profile: dict[str, Any]
    consent: dict[str, bool]
    features: dict[str, Any]


class CopyResult(_Out):
    """Copy written at once: variants per segment (`segments`), each checked and explained."""

    campaign_id: str
    channel: str
    segments: list[dict[str, Any]]
    degraded: list[str]


class CopyJob(_Out):
    """Copy accepted as a background job (a large audience, or `run_async`)."""

    job_id: str
    status: str
    members_total: int
    status_url: str
    results_url: str
