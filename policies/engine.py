"""The policy evaluator: typed verdicts naming every rule that fired, never exceptions per rule.

Item rules become constraints pushed into the vector query (age, stock, suppression) and are
checked again on whatever comes back, so an index that ignores a filter cannot leak an item.
Offer rules are evaluated on the whole offer set; every failing rule is recorded, not just the
first, so a decision trace shows all the reasons an offer was not eligible.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Generic, Literal, TypeVar

from policies.rules import (
    AgeGate,
    ConsentRule,
    FrequencyCap,
    Holdout,
    OfferChannel,
    OfferLocale,
    OfferRelevance,
    OfferValidity,
    Policy,
    Priority,
    StockRule,
    SuppressionRule,
)
from store.features import Purchases
from store.schemas import MAX_MIN_AGE, Channel, Item, Offer, Purpose


@dataclass(frozen=True)
class Facts:
    """What the rules need to know about the person and the moment of a decision."""

    age: int | None
    consent: Mapping[Purpose, bool]
    channel: Channel
    now: datetime
    purchases: Purchases = field(default_factory=Purchases)  # `PolicyEngine.purchases_since` on
    locale: str | None = None


@dataclass(frozen=True)
class Exposure:
    """Offers shown to one person within one frequency cap's window: per offer, per channel."""

    by_offer: Mapping[str, int] = field(default_factory=dict)
    by_channel: Mapping[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.by_channel.values())


@dataclass(frozen=True)
class Firing:
    """A rule that changed the outcome: it constrained retrieval, removed something or blocked a use."""

    rule_id: str
    effect: Literal["constrained", "removed", "blocked"]
    reason: str
    targets: tuple[str, ...] = ()


@dataclass(frozen=True)
class ItemConstraints:
    """Item rules as filters for the vector query."""

    # None when the age rule removes nothing: no rule, or a person at least `MAX_MIN_AGE`
    # old, which every item allows (its `min_age` is at most that). A filter without the
    # condition is one Qdrant checks no payload for, and one filter for every adult, so what
    # is kept per filter (a text's match, the popular items) is shared by all of them.
    max_min_age: int | None
    in_stock_only: bool
    exclude_ids: tuple[str, ...]
    firings: tuple[Firing, ...]


T = TypeVar("T")

_NOT_SHOWN = Exposure()  # the exposure of a cap nobody passed one for: nothing shown
# Firings remembered per offer (`_OfferFacts.removal`): the reasons a policy gives are few (a
# channel, a locale, a count of showings), so this is a bound that is never reached in practice.
_REMOVALS_KEPT = 64


@dataclass(frozen=True, slots=True)
class _OfferFacts:
    """What the offer rules read of one offer, in the form they compare fastest: the validity
    window in UTC, so that comparing it with a UTC `now` needs no `utcoffset()` calls (an aware
    datetime from pydantic carries its own tzinfo object, and comparing two different tzinfo
    objects asks each for its offset), and the channels and categories as sets."""

    offer: Offer
    one: tuple[str]
    valid_from: datetime
    valid_until: datetime
    channels: frozenset[Channel]
    categories: frozenset[str]
    locales: frozenset[str]  # the offer's languages and locales (en, en-GB); empty: all
    languages: frozenset[str]  # those of them that are languages (en), which fit any en-XX
    # The firings that removed this offer so far, by (rule id, reason): a firing is a value, and
    # the same few (off this channel, outside its window, for other categories) remove the same
    # offers in decision after decision (`removal`).
    removals: dict[tuple[str, str], Firing] = field(default_factory=dict, compare=False, repr=False)

    def removal(self, rule_id: str, reason: str) -> Firing:
        """The firing of `rule_id` removing this offer for `reason`: made once, then reused."""
        found = self.removals.get((rule_id, reason))
        if found is None:
            found = Firing(rule_id, "removed", reason, self.one)
            if len(self.removals) < _REMOVALS_KEPT:
                self.removals[rule_id, reason] = found
        return found

    @classmethod
    def of(cls, offer: Offer) -> _OfferFacts:
        return cls(
            offer,
            (offer.offer_id,),
            _utc(offer.valid_from),
            _utc(offer.valid_until),
            frozenset(offer.channels),
            frozenset(offer.categories),
            frozenset(offer.locales),
            frozenset(w for w in offer.locales if "-" not in w),
        )


@dataclass(frozen=True)
class Verdict(Generic[T]):
    kept: list[T]
    removed: dict[str, list[Firing]] = field(default_factory=dict)

    @property
    def firings(self) -> list[Firing]:
        """One firing per rule, with every target it removed."""
        # Each rule's targets in order and its last firing's reason, gathered first and made
        # into one firing per rule at the end: a firing per merge step cost a frozen
        # dataclass and a longer tuple for each of the dozens of offers a policy removes.
        merged: dict[str, tuple[list[str], str]] = {}
        for firings in self.removed.values():
            for firing in firings:
                known = merged.get(firing.rule_id)
                if known is None:
                    merged[firing.rule_id] = (list(firing.targets), firing.reason)
                else:
                    known[0].extend(firing.targets)
                    merged[firing.rule_id] = (known[0], firing.reason)
        return [
            Firing(rule_id, "removed", reason, tuple(targets))
            for rule_id, (targets, reason) in merged.items()
        ]


class PolicyEngine:
    """Evaluates one validated `Policy`."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self._age = next(iter(policy.of_type(AgeGate)), None)
        self._consent = policy.of_type(ConsentRule)
        self._stock = next(iter(policy.of_type(StockRule)), None)
        self._suppression = policy.of_type(SuppressionRule)
        self._caps = policy.of_type(FrequencyCap)
        self._validity = next(iter(policy.of_type(OfferValidity)), None)
        self._channel = next(iter(policy.of_type(OfferChannel)), None)
        self._relevance = next(iter(policy.of_type(OfferRelevance)), None)
        self._locale = next(iter(policy.of_type(OfferLocale)), None)
        self._priority = next(iter(policy.of_type(Priority)), None)
        self._holdouts = policy.of_type(Holdout)
        # The facts of the last offer list checked, and that list's offers: the offer book hands
        # out one list until it reloads, so most calls find theirs here (`_facts_of`).
        self._offer_facts: tuple[tuple[Offer, ...], list[_OfferFacts]] = ((), [])

    @property
    def version(self) -> str:
        return self.policy.version

    @property
    def caps(self) -> list[FrequencyCap]:
        return list(self._caps)

    @property
    def cap_ids(self) -> set[str]:
        return {cap.id for cap in self._caps}

    def offer_weights(self, offers: Iterable[Offer]) -> tuple[dict[str, float] | None, str | None]:
        """What the bandit multiplies each offer's sampled rate by, and the rule that says so."""
        if self._priority is None:
            return None, None
        return {o.offer_id: o.margin_weight for o in offers}, self._priority.id

    # -- people -----------------------------------------------------------------------------

    def holdout(self, subject_key: str, channel: Channel) -> Firing | None:
        """The holdout rule that puts this person in its control group on this channel, if any.

        Membership is a stable hash of the rule's salt and the person's key, so a person stays in
        the same group across requests and workers, and about `share` of people are in it.
        """
        for rule in self._holdouts:
            if not _applies(rule.channels, channel):
                continue
            digest = hashlib.sha256(f"{rule.salt}:{subject_key}".encode()).digest()
            if int.from_bytes(digest[:8], "big") / 2**64 < rule.share:
                reason = f"control group ({rule.share:.0%} of people): non-personalized baseline"
                return Firing(rule.id, "blocked", reason)
        experiment = self.policy.experiment
        if self.arm(subject_key, channel) == "control":
            assert experiment is not None
            share = experiment.arms.get("control", 0.0)
            reason = f"control arm ({share:.0%} of people): non-personalized baseline"
            return Firing(experiment.id, "blocked", reason)
        return None

    def arm(self, subject_key: str, channel: Channel) -> str | None:
        """This person's arm of the policy's experiment on this channel; None outside one."""
        experiment = self.policy.experiment
        if experiment is None or not _applies(experiment.channels, channel):
            return None
        return experiment.arm(subject_key)

    def purpose_for(self, guard: str) -> Purpose | None:
        """The purpose a channel-independent consent rule requires for `guard`, if any."""
        return next(
            (r.purpose for r in self._consent if r.guards == guard and not r.channels), None
        )

    def blocked(self, guard: str, facts: Facts) -> Firing | None:
        """The consent rule that blocks `guard` (profiling, llm, content) for this person now."""
        what = {
            "profiling": "no features are computed from their activity",
            "llm": "their data is not sent to a language model; the offline writer writes",
            "content": "no copy is generated",
        }[guard]
        for rule in self._consent:
            if rule.guards != guard or not _applies(rule.channels, facts.channel):
                continue
            if not facts.consent.get(rule.purpose, False):
                return Firing(rule.id, "blocked", f"no '{rule.purpose.value}' consent: {what}")
        return None

    def personalization(self, facts: Facts) -> tuple[bool, list[Firing]]:
        """Whether the person's profile and history may be used to rank for them."""
        for rule in self._consent:
            if rule.guards != "personalization" or not _applies(rule.channels, facts.channel):
                continue
            if not facts.consent.get(rule.purpose, False):
                reason = f"no '{rule.purpose.value}' consent: ranking is not personalized"
                return False, [Firing(rule.id, "blocked", reason)]
        return True, []

    def _max_min_age(self, facts: Facts) -> int | None:
        if self._age is None:
            return None
        if facts.age is None:
            return 0 if self._age.unknown_age == "deny" else None
        return facts.age

    # -- items ------------------------------------------------------------------------------

    def item_constraints(self, facts: Facts) -> ItemConstraints:
        firings: list[Firing] = []
        max_min_age = self._max_min_age(facts)
        if max_min_age is not None and max_min_age >= MAX_MIN_AGE:
            max_min_age = None  # every item allows this age (see `ItemConstraints`)
        if self._age is not None and max_min_age is not None:
            who = "age unknown" if facts.age is None else f"age {facts.age}"
            reason = f"{who}: only items with a minimum age of {max_min_age} or less"
            firings.append(Firing(self._age.id, "constrained", reason))
        if self._stock is not None:
            firings.append(Firing(self._stock.id, "constrained", "out-of-stock items excluded"))
        excluded: list[str] = []
        for rule, bought in self._suppressed(facts).items():
            reason = f"bought in the last {rule.window_days} days"
            firings.append(Firing(rule.id, "constrained", reason, bought))
            excluded.extend(bought)
        return ItemConstraints(
            max_min_age=max_min_age,
            in_stock_only=self._stock is not None,
            exclude_ids=tuple(dict.fromkeys(excluded)),
            firings=tuple(firings),
        )

    def check_items(self, items: Iterable[Item], facts: Facts) -> Verdict[Item]:
        """Re-check retrieved items against every item rule."""
        max_min_age = self._max_min_age(facts)
        suppressed = {
            item_id: rule for rule, bought in self._suppressed(facts).items() for item_id in bought
        }
        verdict: Verdict[Item] = Verdict(kept=[])
        for item in items:
            firings: list[Firing] = []
            one = (item.item_id,)
            if self._age and max_min_age is not None and item.min_age > max_min_age:
                firings.append(Firing(self._age.id, "removed", f"minimum age {item.min_age}", one))
            if self._stock and not item.available:
                firings.append(Firing(self._stock.id, "removed", "out of stock", one))
            if item.item_id in suppressed:
                rule = suppressed[item.item_id]
                firings.append(Firing(rule.id, "removed", "already bought", one))
            if firings:
                verdict.removed[item.item_id] = firings
            else:
                verdict.kept.append(item)
        return verdict

    def _suppressed(self, facts: Facts) -> dict[SuppressionRule, tuple[str, ...]]:
        found: dict[SuppressionRule, tuple[str, ...]] = {}
        for rule in self._suppression:
            bought = facts.purchases.since(facts.now - timedelta(days=rule.window_days))
            if bought:
                found[rule] = bought
        return found

    def purchases_since(self, now: datetime) -> datetime:
        """The earliest moment whose purchases the rules read at `now` (`Facts.purchases`)."""
        return now - timedelta(days=max((r.window_days for r in self._suppression), default=0))

    # -- offers -----------------------------------------------------------------------------

    def check_offers(
        self,
        offers: Sequence[Offer],
        facts: Facts,
        *,
        item_categories: Iterable[str],
        exposures: Mapping[str, Exposure],
    ) -> Verdict[Offer]:
        """Eligible offers and, for each other offer, every rule that excludes it.

        `exposures` maps a frequency-cap rule id to the offers shown to this person within that
        rule's window.
        """
        categories = set(item_categories)
        max_min_age = self._max_min_age(facts)
        blocked_by_consent = [
            rule
            for rule in self._consent
            if rule.guards == "offers"
            and _applies(rule.channels, facts.channel)
            and not facts.consent.get(rule.purpose, False)
        ]
        now = _utc(facts.now)
        channel = facts.channel
        not_on_channel = f"not offered on {channel.value}"
        locale = facts.locale
        language = locale.split("-")[0] if locale is not None else None
        # What each cap counts: per offer (looked up per offer below), or one number for every
        # offer (the channel's or everyone's shown count), counted once here.
        caps = [_CapCount.of(cap, exposures.get(cap.id, _NOT_SHOWN), channel) for cap in self._caps]
        validity, on_channel, locales, age, relevance = (
            self._validity,
            self._channel,
            self._locale,
            self._age,
            self._relevance,
        )
        verdict: Verdict[Offer] = Verdict(kept=[])
        for known in self._facts_of(offers):
            offer, removal = known.offer, known.removal
            firings = [
                removal(rule.id, f"no '{rule.purpose.value}' consent")
                for rule in blocked_by_consent
            ]
            if validity and not known.valid_from <= now <= known.valid_until:
                firings.append(removal(validity.id, "outside its validity window"))
            if on_channel and channel not in known.channels:
                firings.append(removal(on_channel.id, not_on_channel))
            if (
                locales
                and known.locales
                and not (
                    locale is not None and (locale in known.locales or language in known.languages)
                )
            ):
                reason = f"made for {', '.join(offer.locales)}, not {locale or 'an unknown locale'}"
                firings.append(removal(locales.id, reason))
            if age and max_min_age is not None and offer.min_age > max_min_age:
                firings.append(removal(age.id, f"minimum age {offer.min_age}"))
            if relevance and categories.isdisjoint(known.categories):
                firings.append(removal(relevance.id, "applies to none of the recommended items"))
            for count in caps:
                if count.by_offer is None:
                    if count.reason is not None:
                        firings.append(removal(count.cap.id, count.reason))
                else:
                    shown = count.by_offer.get(offer.offer_id, 0)
                    if shown >= count.cap.max:
                        firings.append(
                            removal(count.cap.id, _cap_reason(count.cap, shown, channel))
                        )
            if firings:
                verdict.removed[offer.offer_id] = firings
            else:
                verdict.kept.append(offer)
        return verdict

    def _facts_of(self, offers: Sequence[Offer]) -> list[_OfferFacts]:
        """The facts of each offer, in order; computed again only for another list of offers.

        The key is the offers themselves (by identity), not the list object, so a list changed
        in place is seen as another; offers are read-only values (the offer book replaces its
        list when it reloads, never an offer in it)."""
        cached, found = self._offer_facts
        if len(cached) == len(offers) and all(a is b for a, b in zip(cached, offers, strict=True)):
            return found
        found = [_OfferFacts.of(offer) for offer in offers]
        self._offer_facts = (tuple(offers), found)  # one assignment: safe between threads
        return found


@dataclass(frozen=True, slots=True)
class _CapCount:
    """What one frequency cap counts for one decision: the offers shown within its window per
    offer (`by_offer`, for a cap per offer), or one count that holds for every offer (`shown`:
    on the decision's channel, or overall)."""

    cap: FrequencyCap
    by_offer: Mapping[str, int] | None
    reason: str | None  # a cap on every offer: why it removes each, None when it is not reached

    @classmethod
    def of(cls, cap: FrequencyCap, seen: Exposure, channel: Channel) -> _CapCount:
        if cap.scope == "offer":
            return cls(cap, seen.by_offer, None)
        shown = seen.by_channel.get(channel.value, 0) if cap.scope == "channel" else seen.total
        return cls(cap, None, _cap_reason(cap, shown, channel) if shown >= cap.max else None)


def _cap_reason(cap: FrequencyCap, shown: int, channel: Channel) -> str:
    what = {
        "offer": "this offer shown",
        "channel": f"offers shown on {channel.value}",
        "overall": "offers shown",
    }[cap.scope]
    window = f"in the last {cap.window_hours:g} h (cap {cap.max})"
    return f"{what} {shown}× {window}"


def _utc(moment: datetime) -> datetime:
    """An aware datetime with `datetime.UTC` as its tzinfo; a naive one unchanged (comparing it
    with an aware one still fails, as it did)."""
    if moment.tzinfo is None or moment.tzinfo is UTC:
        return moment
    return moment.astimezone(UTC)


def _applies(channels: tuple[Channel, ...], channel: Channel) -> bool:
    return not channels or channel in channels
