"""The policy file: rules as data, validated at load, versioned by the hash of the file.

Each rule has an id that decisions record when it fires. Rule kinds are a discriminated union
on `type`, so a typo in a rule's type or field is an error at load, never a silent no-op.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Annotated, Literal, TypeVar

import phonenumbers
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from policies.pii.entities import (
    ALWAYS_REDACTED,
    DEFAULT_PHONE_REGIONS,
    DEFAULT_REDACTED,
    ENTITY_TYPES,
)
from store.schemas import Channel, EventType, Purpose


class PolicyError(ValueError):
    """The policy file cannot be used; the message names the rule and field to fix."""


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$", max_length=64)
    description: str = ""


R = TypeVar("R", bound=_Rule)


class AgeGate(_Rule):
    """Nobody gets an item or offer whose minimum age is above their own age."""

    type: Literal["age_gate"]
    unknown_age: Literal["deny", "allow"] = Field(
        "deny", description="How a person with no birth date is treated: as under age (deny)."
    )


class ConsentRule(_Rule):
    """A purpose that must be granted before data is used for something."""

    type: Literal["consent"]
    purpose: Purpose
    guards: Literal["personalization", "offers", "profiling", "llm", "content"] = Field(
        description="What needs the purpose: ranking for the person, offers, features computed "
        "from their events, sending their data to an LLM, or generated copy at all."
    )
    channels: tuple[Channel, ...] = Field(default=(), description="Empty: every channel.")


class StockRule(_Rule):
    """Out-of-stock items are never recommended."""

    type: Literal["stock"]


class SuppressionRule(_Rule):
    """Items the person already bought within the window are not recommended again."""

    type: Literal["suppression"]
    window_days: int = Field(gt=0, le=3650)


class FrequencyCap(_Rule):
    """At most `max` offers shown to the same person within the window, counted per offer (the
    same offer), per channel (any offer on this channel) or overall (any offer anywhere)."""

    type: Literal["frequency_cap"]
    max: int = Field(ge=1)
    window_hours: float = Field(gt=0, le=24 * 366)
    scope: Literal["offer", "channel", "overall"] = "offer"


class OfferValidity(_Rule):
    """Offers are shown only inside their validity window."""

    type: Literal["offer_validity"]


class OfferChannel(_Rule):
    """Offers are shown only on the channels they were made for."""

    type: Literal["offer_channel"]


class OfferRelevance(_Rule):
    """An offer must apply to the category of at least one recommended item."""

    type: Literal["offer_relevance"]


class OfferLocale(_Rule):
    """Offers made for some locales are shown only to people with one of them (by language, or
    by exact locale: an offer for `en` fits `en-GB`; one for `en-GB` does not fit `en-US`)."""

    type: Literal["offer_locale"]


class Priority(_Rule):
    """The bandit maximizes the expected margin-weighted reward: its sampled conversion rate of
    each offer is multiplied by the offer's `margin_weight` before the choice."""

    type: Literal["priority"]
    by: Literal["margin_weight"] = "margin_weight"


class Holdout(_Rule):
    """A stable share of people on some channels gets the non-personalized baseline (popular
    items, an eligible offer drawn uniformly) as the control group of an experiment."""

    type: Literal["holdout"]
    share: float = Field(gt=0, lt=1)
    channels: tuple[Channel, ...] = Field(default=(), description="Empty: every channel.")
    salt: str = Field("holdout", min_length=1, description="Change it to redraw the groups.")


Rule = Annotated[
    AgeGate
    | ConsentRule
    | StockRule
    | SuppressionRule
    | FrequencyCap
    | OfferValidity
    | OfferChannel
    | OfferRelevance
    | OfferLocale
    | Priority
    | Holdout,
    Field(discriminator="type"),
]


class BanditPrior(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    alpha: float = Field(1.0, gt=0)
    beta: float = Field(1.0, gt=0)


class Disclaimer(BaseModel):
    """A sentence generated copy must carry, word for word, on some channels."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$", max_length=64)
    text: str = Field(min_length=1, max_length=300)
    channels: tuple[Channel, ...] = Field(default=(), description="Empty: every channel.")
    when: Literal["always", "offer"] = Field(
        "always", description="'offer': only in copy that carries an offer."
    )


class ContentRules(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_length: dict[Channel, int] = Field(default_factory=dict)
    banned_phrases: tuple[str, ...] = ()
    required_disclaimers: tuple[Disclaimer, ...] = ()

    def disclaimers(self, channel: Channel, *, with_offer: bool) -> list[str]:
        """The disclaimers copy on `channel` must carry."""
        return [
            d.text
            for d in self.required_disclaimers
            if (not d.channels or channel in d.channels) and (d.when == "always" or with_offer)
        ]


class PIISettings(BaseModel):
    """What the PII guard redacts before text reaches the model, a log or the decision log."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    redact: tuple[str, ...] = Field(
        DEFAULT_REDACTED,
        description="Entity types replaced by placeholders; "
        f"{', '.join(sorted(ALWAYS_REDACTED))} are always among them.",
    )
    phone_regions: tuple[str, ...] = Field(
        DEFAULT_PHONE_REGIONS,
        description="Regions whose national phone formats are recognised (numbers written with "
        "+CC or 00CC are recognised for every region).",
    )

    @model_validator(mode="after")
    def _known_and_safe(self) -> PIISettings:
        unknown = sorted(set(self.redact) - set(ENTITY_TYPES))
        if unknown:
            raise ValueError(
                f"redact: unknown entity type(s) {', '.join(unknown)}; use some of "
                f"{', '.join(ENTITY_TYPES)}"
            )
        missing = sorted(ALWAYS_REDACTED - set(self.redact))
        if missing:
            raise ValueError(
                f"redact: {', '.join(missing)} must stay redacted (direct identifiers and "
                "payment details); add them back to the list"
            )
        regions = sorted(set(self.phone_regions) - phonenumbers.SUPPORTED_REGIONS)
        if regions:
            raise ValueError(
                f"phone_regions: unknown region(s) {', '.join(regions)}; use ISO 3166 codes "
                "such as GB, US, IN"
            )
        return self


class RewardPolicy(BaseModel):
    """How behaviour becomes a decision's bandit reward (`tools.rewards`).

    An event that names its decision (`decision_id`) settles that decision's reward at once, as
    `/v1/feedback` does; other events are attributed to the latest decision that showed their
    item or offer to the same person within the window, and the decision's reward is the
    largest of theirs when the window closes, or `default` when none came.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    window_hours: float = Field(24.0, gt=0, le=24 * 90)
    events: dict[EventType, float] = Field(
        default_factory=lambda: {
            EventType.click: 0.2,
            EventType.add_to_cart: 0.5,
            EventType.purchase: 1.0,
        },
        description="The reward of each event type, in [0, 1]; types not listed earn nothing.",
    )
    revenue_scale: float | None = Field(
        None,
        gt=0,
        description="Revenue-weighted: a purchase with a value earns min(1, value / scale) "
        "instead of its fixed reward.",
    )
    default: float = Field(0.0, ge=0, le=1, description="The reward of a decision nobody acted on.")

    @model_validator(mode="after")
    def _rewards_in_range(self) -> RewardPolicy:
        wrong = sorted(t.value for t, r in self.events.items() if not 0 <= r <= 1)
        if wrong:
            raise ValueError(f"events: rewards must lie in [0, 1] ({', '.join(wrong)})")
        return self

    def reward_of(self, event_type: str, value: float | None) -> float:
        """What one event earns its decision."""
        kind = EventType(event_type)
        if kind is EventType.purchase and self.revenue_scale is not None and value is not None:
            return min(1.0, value / self.revenue_scale)
        return self.events.get(kind, 0.0)


ARMS = ("control", "live", "challenger")


class Experiment(BaseModel):
    """People split by a stable hash into arms: `control` (the non-personalized baseline, as a
    holdout), `live` (this policy) and `challenger` (another policy file, choosing the offer)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$", max_length=64)
    arms: dict[Literal["control", "live", "challenger"], float] = Field(
        description="Share of people per arm; the shares sum to 1."
    )
    challenger: Path | None = Field(
        None, description="The challenger's policy file, relative to this one."
    )
    channels: tuple[Channel, ...] = Field(default=(), description="Empty: every channel.")
    salt: str = Field("", description="Empty: the experiment id. Change it to redraw the arms.")

    @model_validator(mode="after")
    def _shares(self) -> Experiment:
        if any(share < 0 for share in self.arms.values()):
            raise ValueError("arms: shares must not be negative")
        if abs(sum(self.arms.values()) - 1) > 1e-9:
            raise ValueError(f"arms: shares must sum to 1, not {sum(self.arms.values()):g}")
        if self.arms.get("challenger", 0) > 0 and self.challenger is None:
            raise ValueError("challenger: a challenger arm needs the challenger's policy file")
        return self

    def arm(self, subject_key: str) -> str:
        """The arm of a person: a stable hash of the salt and their key, cut by the shares."""
        digest = hashlib.sha256(f"{self.salt or self.id}:{subject_key}".encode()).digest()
        point = int.from_bytes(digest[:8], "big") / 2**64
        edge = 0.0
        for name in ARMS:
            edge += self.arms.get(name, 0.0)  # type: ignore[call-overload]
            if point < edge:
                return name
        return "live"  # only a rounding error in the shares reaches this line


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    rules: tuple[Rule, ...] = Field(min_length=1)
    bandit_prior: BanditPrior = BanditPrior()
    bandit_priors: dict[str, BanditPrior] = Field(
        default_factory=dict, description="Cold-start priors of single offers, by offer id."
    )
    bandit_segment: Literal["channel", "global", "lifecycle"] = Field(
        "channel",
        description="What Thompson sampling keeps one posterior per: channel, everyone, or "
        "lifecycle stage (new, active, lapsing, lapsed). Fewer segments learn faster.",
    )
    bandits: dict[Channel, Literal["thompson", "lints", "linucb"]] = Field(
        default_factory=dict,
        description="The offer bandit of each surface (channel); Thompson sampling by default.",
    )
    content: ContentRules = ContentRules()
    pii: PIISettings = PIISettings()
    rewards: RewardPolicy = RewardPolicy()
    experiment: Experiment | None = None
    version: str = Field("", description="Set from the file's hash at load.")

    @model_validator(mode="after")
    def _ids_are_unique(self) -> Policy:
        seen: set[str] = set()
        for rule in self.rules:
            if rule.id in seen:
                raise ValueError(f"rule id {rule.id!r} is used twice; ids must be unique")
            seen.add(rule.id)
        return self

    def of_type(self, kind: type[R]) -> list[R]:
        return [rule for rule in self.rules if isinstance(rule, kind)]

    def prior(self, offer_id: str) -> tuple[float, float]:
        prior = self.bandit_priors.get(offer_id, self.bandit_prior)
        return prior.alpha, prior.beta


def load_policy(path: Path) -> Policy:
    """Read and validate a policy file; errors say which rule and field is wrong."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise PolicyError(f"cannot read policy file {path}: {error.strerror}") from error
    policy = parse_policy(raw, source=str(path))
    experiment = policy.experiment
    if experiment is not None and experiment.challenger is not None:
        # The challenger's file is named relative to this one; it is read by the factory.
        resolved = (path.parent / experiment.challenger).resolve()
        if not resolved.is_file():
            raise PolicyError(f"{path} is invalid: experiment.challenger: no file {resolved}")
        experiment = experiment.model_copy(update={"challenger": resolved})
        policy = policy.model_copy(update={"experiment": experiment})
    return policy


def parse_policy(raw: bytes, *, source: str = "<policy>") -> Policy:
    try:
        document = yaml.safe_load(raw)
    except yaml.YAMLError as error:
        raise PolicyError(f"{source} is not valid YAML: {error}") from error
    if not isinstance(document, dict):
        raise PolicyError(f"{source} must be a mapping with 'name' and 'rules'")
    document["version"] = hashlib.sha256(raw).hexdigest()[:12]
    try:
        return Policy.model_validate(document)
    except ValidationError as error:
        errors = error.errors()
        # A rule that failed validation also makes the rule list look empty; say only the cause.
        specific = [err for err in errors if err["type"] != "too_short"] or errors
        problems = "; ".join(f"{_location(document, err['loc'])}: {err['msg']}" for err in specific)
        raise PolicyError(f"{source} is invalid: {problems}") from error


def _location(document: dict, loc: tuple) -> str:
    """`rules[3] (cap-24h).window_hours` rather than pydantic's `rules.3.frequency_cap.window_hours`."""
    parts: list[str] = []
    node: object = document
    for key in loc:
        if isinstance(key, int) and isinstance(node, list):
            node = node[key] if key < len(node) else None
            rule_id = node.get("id") if isinstance(node, dict) else None
            parts[-1] += f"[{key}]" + (f" ({rule_id})" if rule_id else "")
        elif isinstance(node, dict) and key in node:
            node = node[key]
            parts.append(str(key))
        elif isinstance(node, dict) and key == node.get("type"):
            continue  # pydantic names the union member; the rule's type is already known
        else:
            parts.append(str(key))
    return ".".join(parts) or "(file)"
