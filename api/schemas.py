"""Request and response schemas, one per direction, so nothing internal or PII-bearing leaks out."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

from agents.copy.segments import Audience
from agents.decide.explain import Explanation
from policies.copy import CopyChannel
from store.schemas import Channel, Event, Identifier, Item, Profile, Purpose, require_subject
from tools.schemas import Candidate, OfferChoice, OfferSummary, ScoreParts

MAX_BATCH = 1000


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, allow_inf_nan=False)


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
        require_subject(self.user_id, self.anonymous_id)
        if any(len(value) > 500 for value in self.context.values()):
            raise ValueError("context: values must be at most 500 characters")
        if any(len(key) > 64 for key in self.context):
            raise ValueError("context: keys must be at most 64 characters")
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

    @classmethod
    def of(cls, c: Candidate) -> ItemOut:
        return cls(
            item_id=c.item_id,
            title=c.title,
            category=c.category,
            price=c.price,
            currency=c.currency,
            score=c.score,
            score_parts=c.parts,
            reasons=c.reasons,
        )


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

    @classmethod
    def of(cls, offer: OfferSummary | None, choice: OfferChoice | None) -> OfferOut | None:
        """The offer shown, with how the bandit chose it; None when none was shown."""
        if offer is None or choice is None:
            return None
        return cls(
            offer_id=offer.offer_id,
            title=offer.title,
            terms=offer.terms,
            discount_percent=offer.discount_percent,
            valid_until=offer.valid_until,
            propensity=choice.propensity,
            estimate=choice.estimate,
            policy=choice.policy,
            segment=choice.segment,
        )


class DecideOut(BaseModel):
    decision_id: str
    channel: Channel
    items: list[ItemOut]
    offer: OfferOut | None
    content: str
    explanation: Explanation
    degraded: list[str] = Field(description="Fallbacks used for this decision; empty when none.")
    policy_version: str


class _DocumentedEvent:
    """Any value, documented as an `Event`: the route validates each event on its own, so one
    bad event is rejected alone while OpenAPI still shows every event field."""

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.any_schema()

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        # The generator itself (not `handler`, which is bound to the any-schema) registers
        # Event as a definition, so OpenAPI gets an Event component and a $ref to it. The
        # handler pydantic passes always carries it; the protocol type does not declare it.
        generator = handler.generate_json_schema  # type: ignore[attr-defined]
        return generator.generate_inner(Event.__pydantic_core_schema__)


class EventsIn(_In):
    events: list[Annotated[Any, _DocumentedEvent]] = Field(
        min_length=1,
        max_length=MAX_BATCH,
        description="Events, validated one by one: an invalid event is rejected alone, with "
        "its index and reason, and the others are stored.",
    )


class EventResult(BaseModel):
    index: int
    event_id: str | None
    status: Literal["accepted", "duplicate", "rejected"]
    reason: str | None = None
    attributed_to: str | None = Field(
        None, description="The decision an accepted event was attributed to, if any."
    )


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
    storage: bool = Field(
        description="False when writes fail or are about to: disk or database full."
    )
    vector_backend: str
    indexed_items: int
    embedder: str
    pii: str
    writer: str
    policy_version: str
    auth: Literal["off", "keys"] = Field(description="'off': every caller has every scope.")
    degraded: list[str]


class ChatIn(_In):
    user_id: Identifier | None = None
    anonymous_id: Identifier | None = None
    message: str = Field(
        min_length=1, max_length=2000, description="Free text; pseudonymized before use."
    )
    thread_id: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
        description="The conversation to continue (yours only); omitted: a new one.",
    )
    channel: Channel = Channel.web
    stream: bool = Field(True, description="Server-sent events (token, tool, final); else JSON.")
    k: int = Field(10, ge=1, le=10, description="Items the offline plan retrieves.")
    deadline_ms: int | None = Field(
        None,
        ge=100,
        le=120_000,
        description="Answer within this time (the offline plan if need be).",
    )

    @model_validator(mode="after")
    def _has_subject(self) -> ChatIn:
        require_subject(self.user_id, self.anonymous_id)
        return self


class ChatOut(BaseModel):
    decision_id: str
    thread_id: str
    items: list[ItemOut] = Field(description="The items the reply names.")
    offer: OfferOut | None = Field(description="The offer the reply names, as the bandit chose it.")
    explanation: Explanation
    reply: str
    degraded: list[str] = Field(description="Fallbacks used for this turn; empty when none.")


# -- marketer copy: its jobs and variant arms. POST /v1/copy takes and returns the copy graph's
# own PII-free models (agents.copy.state.CopyRequest and CopyResult).


class CopyAccepted(BaseModel):
    job_id: str = Field(description="Also the campaign id of the variants it writes.")
    status: Literal["queued"]
    members_total: int = Field(description="People the audience scan will read.")
    status_url: str
    results_url: str


class JobProgressOut(BaseModel):
    segments_done: int
    segments_total: int
    members_scanned: int
    members_total: int


class JobOut(BaseModel):
    job_id: str
    kind: str
    status: Literal["queued", "running", "done", "failed"]
    progress: JobProgressOut
    created_at: str
    started_at: str | None
    finished_at: str | None
    error: str | None
    summary: dict[str, Any] | None = Field(description="Segments, sizes and variant counts.")
    results_url: str


class VariantArmOut(BaseModel):
    campaign_id: str
    segment: str
    variant_id: str
    registered_now: bool = Field(description="False when the variant was already an arm.")
    alpha: float
    beta: float
    rewards_seen: int
    estimate: float = Field(description="Posterior mean reward of the variant.")


class CopyServeIn(_In):
    user_id: Identifier
    segment: str | None = Field(
        None,
        max_length=64,
        description="Serve this segment's variants; default: the first "
        "segment of the campaign the person qualifies for.",
    )


class CopyServeOut(BaseModel):
    decision_id: str = Field(description="Reward it with POST /v1/copy/{campaign_id}/feedback.")
    campaign_id: str
    segment: str
    variant_id: str
    subject: str | None
    text: str
    item_ids: list[str]
    offer_id: str | None
    propensity: float = Field(description="Probability that Thompson sampling chose this variant.")
    probabilities: dict[str, float]


class CopyFeedbackIn(_In):
    decision_id: str = Field(min_length=1, max_length=64)
    reward: float = Field(ge=0, le=1, description="1 for a conversion, 0 for none.")


class CopyFeedbackOut(BaseModel):
    decision_id: str
    reward: float
    arm: VariantArmOut


class ProblemOut(BaseModel):
    """An RFC 9457 problem document: every error answer, 4xx and 5xx."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    errors: list[dict[str, str]] | None = Field(
        None, description="Each invalid field and its problem (422 only)."
    )


# Every route may answer with these; documented so that clients (and schema fuzzing) can rely
# on the shape of an error.
_PROBLEM = {
    "model": ProblemOut,
    "content": {
        "application/problem+json": {"schema": {"$ref": "#/components/schemas/ProblemOut"}}
    },
}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {**_PROBLEM, "description": description}
    for status, description in {
        401: "No valid API key (with ATTUNE_AUTH=keys).",
        403: "The key lacks the scope, or acts for another user.",
        404: "Not found.",
        409: "Conflict with the current state.",
        413: "Request body larger than ATTUNE_MAX_BODY_BYTES.",
        422: "Invalid request: `errors` names each field and its problem.",
        429: "Rate limit reached: see Retry-After.",
        500: "The service failed; the error was logged.",
    }.items()
}


# -- The console's copy studio and eval reports ---------------------------------------------


class AudiencePreviewIn(_In):
    channel: CopyChannel
    audience: Audience
    sample: int = Field(5, ge=0, le=20, description="User ids to show per segment.")


class SegmentPreviewOut(BaseModel):
    name: str
    rule: str = Field(description="The segment's rule in words.")
    size: int = Field(description="Members who qualify now, consent included.")
    excluded: dict[str, int] = Field(description="Rule id → people it left out of the segment.")
    unknown_user_ids: int
    sample: list[str] = Field(description="The first members' user ids, in user id order.")


class AudiencePreviewOut(BaseModel):
    channel: CopyChannel
    segments: list[SegmentPreviewOut]


class EvalReportOut(BaseModel):
    report_id: str = Field(description="The report folder's name.")
    name: str
    kind: str
    started_at: str | None
    passed: bool | None
    summary: str | None


# -- The calls teams migrate from: Personalizer's Rank and Reward, Personalize's similar items and
# batch recommendations, catalog item reads and removals ---------------------------------------

MAX_FEATURES = 200  # flattened features per group (context, one action, one slot)
FeatureObjects = Annotated[
    list[dict[str, Any]],
    Field(
        default_factory=list,
        max_length=20,
        description="Feature objects: nested objects of strings, numbers, booleans and lists.",
    ),
]


def _check_features(value: list[dict[str, Any]], field: str) -> None:
    """Bounded, finite feature objects; the ValueError names the field."""
    from tools.rank import flatten

    def walk(path: str, inner: Any, depth: int) -> None:
        if depth > 5:
            raise ValueError(f"{path}: nested deeper than 5 levels")
        if isinstance(inner, dict):
            for key, item in inner.items():
                if len(key) > 64:
                    raise ValueError(f"{path}: a key longer than 64 characters")
                walk(f"{path}.{key}", item, depth + 1)
        elif isinstance(inner, list):
            for item in inner:
                walk(path, item, depth + 1)
        elif isinstance(inner, str):
            if len(inner) > 256:
                raise ValueError(f"{path}: a string longer than 256 characters")
        elif isinstance(inner, int | float) and not isinstance(inner, bool):
            if not (-1e9 <= inner <= 1e9):
                raise ValueError(f"{path}: numbers must be finite, within ±1e9")
        elif inner is not None and not isinstance(inner, bool):
            raise ValueError(f"{path}: unsupported value")

    for i, group in enumerate(value):
        walk(f"{field}[{i}]", group, 0)
    if len(flatten(value)) > MAX_FEATURES:
        raise ValueError(f"{field}: more than {MAX_FEATURES} features")


class RankActionIn(_In):
    id: Identifier
    features: FeatureObjects


class RankSlotIn(_In):
    id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
    features: FeatureObjects
    excluded_actions: list[Identifier] = Field(default_factory=list, max_length=50)
    baseline_action: Identifier = Field(
        description="The action this slot shows without personalization (for comparison)."
    )


class RankIn(_In):
    event_id: (
        Annotated[str, Field(min_length=1, max_length=48, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")]
        | None
    ) = Field(None, description="Your id for this rank; one is made when absent.")
    user_id: Identifier | None = Field(
        None,
        description="The person ranked for: their profile features join the context (with "
        "profiling consent). A key bound to a user ranks for that user only.",
    )
    context_features: FeatureObjects
    actions: list[RankActionIn] = Field(min_length=1, max_length=50)
    excluded_actions: list[Identifier] = Field(default_factory=list, max_length=50)
    defer_activation: bool = Field(
        False, description="Rank now; rewards count only after POST /v1/rank/{event_id}/activate."
    )
    slots: list[RankSlotIn] | None = Field(
        None, min_length=1, max_length=8, description="Multi-slot: one chosen action per slot."
    )

    @model_validator(mode="after")
    def _consistent(self) -> RankIn:
        _check_features(self.context_features, "context_features")
        ids = [a.id for a in self.actions]
        for i, action in enumerate(self.actions):
            _check_features(action.features, f"actions[{i}].features")
            if action.id in ids[:i]:
                raise ValueError(f"actions[{i}].id: {action.id!r} appears twice")
        known = set(ids)
        for i, excluded in enumerate(self.excluded_actions):
            if excluded not in known:
                raise ValueError(f"excluded_actions[{i}]: {excluded!r} is not one of the actions")
        left = known - set(self.excluded_actions)
        if not left:
            raise ValueError("excluded_actions: every action is excluded")
        if self.slots is not None:
            if len(self.slots) > len(left):
                raise ValueError(
                    f"slots: {len(self.slots)} slots but only {len(left)} actions to fill them"
                )
            seen: set[str] = set()
            for i, slot in enumerate(self.slots):
                _check_features(slot.features, f"slots[{i}].features")
                if slot.id in seen:
                    raise ValueError(f"slots[{i}].id: {slot.id!r} appears twice")
                seen.add(slot.id)
                for j, excluded in enumerate(slot.excluded_actions):
                    if excluded not in known:
                        raise ValueError(
                            f"slots[{i}].excluded_actions[{j}]: {excluded!r} is not one of the actions"
                        )
                if slot.baseline_action not in left - set(slot.excluded_actions):
                    raise ValueError(
                        f"slots[{i}].baseline_action: {slot.baseline_action!r} is not an action "
                        "this slot may show"
                    )
        return self


class RankedActionOut(BaseModel):
    id: str
    probability: float = Field(description="The chance this action was chosen (first slot).")
    score: float = Field(description="The model's predicted reward, x·θ̂.")


class RankSlotOut(BaseModel):
    id: str
    reward_action_id: str
    probability: float
    baseline_action: str


class RankOut(BaseModel):
    event_id: str
    reward_action_id: str = Field(description="The action to show (the first slot's).")
    ranking: list[RankedActionOut] = Field(
        description="Every action that was not excluded: the chosen one first, then by score."
    )
    slots: list[RankSlotOut] | None = None
    activated: bool
    expires_at: str
    policy: str


class SlotRewardIn(_In):
    slot_id: Annotated[str, Field(min_length=1, max_length=64)]
    value: float = Field(ge=0, le=1)


class RankRewardIn(_In):
    value: float | None = Field(None, ge=0, le=1, description="The reward of a single-slot rank.")
    slots: list[SlotRewardIn] | None = Field(
        None, min_length=1, max_length=8, description="Multi-slot: a reward per slot id."
    )

    @model_validator(mode="after")
    def _one(self) -> RankRewardIn:
        if (self.value is None) == (self.slots is None):
            raise ValueError("value: send either value (a single-slot rank) or slots (multi-slot)")
        if self.slots is not None:
            ids = [s.slot_id for s in self.slots]
            if len(set(ids)) != len(ids):
                raise ValueError("slots: a slot_id appears twice")
        return self


class SlotRewardOut(BaseModel):
    slot_id: str
    action_id: str
    value: float


class RankRewardOut(BaseModel):
    event_id: str
    rewarded: list[SlotRewardOut]
    duplicate: bool = Field(description="True when every reward was recorded before (a retry).")
    observations: int = Field(description="Rewards the rank model has learned from so far.")


class RankActivateOut(BaseModel):
    event_id: str
    activated: bool
    expires_at: str


class CatalogItemOut(BaseModel):
    item: Item
    hidden: bool


class SimilarItemOut(BaseModel):
    item_id: str
    title: str
    category: str
    price: float
    currency: str
    score: float = Field(description="Cosine similarity of the items' content vectors.")


class SimilarOut(BaseModel):
    item_id: str
    items: list[SimilarItemOut]
    degraded: list[str]


class ItemRemovedOut(BaseModel):
    item_id: str
    hidden: bool
    deleted: bool
    indexed_total: int


class BatchRecommendIn(_In):
    user_ids: list[Identifier] = Field(min_length=1, max_length=10_000)
    channel: Channel = Channel.web
    k: int = Field(10, ge=1, le=50)
    query: str | None = Field(None, max_length=1000, description="Free text for every person.")

    @model_validator(mode="after")
    def _unique(self) -> BatchRecommendIn:
        seen: set[str] = set()
        for i, user_id in enumerate(self.user_ids):
            if user_id in seen:
                raise ValueError(f"user_ids[{i}]: {user_id!r} appears twice")
            seen.add(user_id)
        return self


class BatchAccepted(BaseModel):
    job_id: str
    status: str
    people: int
    status_url: str
    results_url: str
