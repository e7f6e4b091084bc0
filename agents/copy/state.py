"""The copy request, the copy graph's state and context, and what a copy run returns (no PII)."""

from __future__ import annotations

import operator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Protocol

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from typing_extensions import TypedDict  # pydantic reads these on 3.11 only from typing_extensions

from agents.copy.audience import SegmentAudience
from agents.copy.persona import Objective
from agents.copy.segments import Audience, Category, Segment
from agents.copy.writer import Tone
from agents.decide.explain import Reason
from policies.copy import ChannelSpec, CopyChannel
from store.schemas import Identifier
from tools.schemas import RuleFired

if TYPE_CHECKING:
    from agents.services import Services
    from agents.writing.writer import Writer

Phrase = Annotated[str, StringConstraints(strip_whitespace=True, min_length=2, max_length=80)]
CHECKS = (
    "grounding-ids",
    "grounding-prices",
    "grounding-discounts",
    "grounding-dates",
    "content-banned-phrase",
    "content-disclaimer",
    "copy-must-say",
    "content-length",
    "copy-format",
    "pii-leak",
)


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, populate_by_name=True)


class CopyBriefIn(_In):
    """The marketer's brief."""

    goal: str = Field(
        min_length=3,
        max_length=300,
        description="What the copy should achieve; it guides item retrieval and the writer.",
    )
    categories: list[Category] = Field(
        default_factory=list, max_length=10, description="Product focus: catalog categories."
    )
    item_ids: list[Identifier] = Field(
        default_factory=list, max_length=20, description="Product focus: items to feature first."
    )
    tone: Tone = Tone.friendly
    objective: Objective | None = Field(
        None,
        description="winback, upsell, launch, cross_sell, loyalty or promote; read from the "
        "goal's words when absent. With each segment's lifecycle it shapes items and copy.",
    )
    must_say: list[Phrase] = Field(
        default_factory=list, max_length=5, description="Phrases the copy includes word for word."
    )
    must_not_say: list[Phrase] = Field(
        default_factory=list, max_length=30, description="Phrases the copy never includes."
    )

    @model_validator(mode="after")
    def _focus_and_phrases(self) -> CopyBriefIn:
        if not self.categories and not self.item_ids:
            raise ValueError("give a product focus: categories, item_ids or both")
        for phrase in self.must_say:
            clash = [p for p in self.must_not_say if p.lower() in phrase.lower()]
            if clash:
                raise ValueError(f"must_say {phrase!r} contains the must_not_say {clash[0]!r}")
        return self


class CopyRequest(_In):
    """POST /v1/copy: a brief, a channel, an audience and how many variants per segment."""

    brief: CopyBriefIn
    channel: CopyChannel
    audience: Audience
    variants: int = Field(2, ge=1, le=5, description="Copy variants per segment.")
    run_async: bool = Field(
        False, alias="async", description="Run as a background job whatever the audience's size."
    )
    register_arms: bool = Field(
        False,
        alias="register",
        description="Register every variant that passed its checks as a bandit arm.",
    )

    def json_dump(self) -> dict:
        return self.model_dump(mode="json", by_alias=True)


class CopyExplanation(BaseModel):
    summary: str
    segment: str = Field(description="Who the segment is, how many, and who was left out.")
    items: list[Reason] = Field(description="Why each item the variant features was chosen.")
    offer: str = Field(description="Why this offer, or why none.")
    variant: str = Field(description="Tone, angle and writer of this variant.")
    rules_fired: list[RuleFired]


class VariantOut(BaseModel):
    variant_id: str
    segment: str
    index: int
    channel: CopyChannel
    subject: str | None = Field(description="The subject line (email only).")
    text: str
    item_ids: list[str]
    offer_id: str | None
    checks_passed: bool
    checks: list[str] = Field(description="The checks every variant went through.")
    problems: list[str] = Field(description="Failed checks of withheld copy; empty when passed.")
    writer: str
    prompt_version: str
    attempts: int
    explanation: CopyExplanation
    degraded: list[str]


class SegmentOut(BaseModel):
    name: str
    rule: str = Field(description="The segment's rule in words.")
    size: int = Field(description="Members who qualify, consent included.")
    excluded: dict[str, int] = Field(description="Rule id → people it left out of the segment.")
    unknown_user_ids: int = 0
    item_ids: list[str]
    offer_id: str | None
    variants: list[VariantOut]
    note: str | None = None
    degraded: list[str] = Field(default_factory=list)
    persona: str = Field("everyone", description="Who the segment is, read from its rule.")
    objective: str = Field("promote", description="The brief's objective, given or read.")


class CopyResult(BaseModel):
    campaign_id: str
    channel: CopyChannel
    segments: list[SegmentOut]
    members_scanned: int
    policy_version: str
    writer: str
    degraded: list[str]


class CopyProgress(Protocol):
    def scanned(self, n: int) -> None: ...

    def segment_done(self) -> None: ...


class NoProgress:
    def scanned(self, n: int) -> None:
        pass

    def segment_done(self) -> None:
        pass


class CopyState(TypedDict, total=False):
    audiences: dict[str, SegmentAudience]
    scanned: int
    results: Annotated[list[tuple[int, SegmentOut]], operator.add]


class SegmentTask(TypedDict):
    position: int
    audience: SegmentAudience


@dataclass
class CopyContext:
    """One copy run's runtime context: the services, the request and where progress goes."""

    services: Services
    request: CopyRequest
    segments: list[Segment]
    spec: ChannelSpec
    campaign_id: str
    now: datetime
    writer: Writer
    fallback: Writer
    progress: CopyProgress
