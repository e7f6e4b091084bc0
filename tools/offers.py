"""Offer tools: the offers policy allows for this person now, and the bandit's choice among them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from policies.engine import Exposure, PolicyEngine
from store.bandit import ArmState, OfferStateQuery, get_arms
from store.catalog import get_items
from store.decisions import offer_exposure_times
from store.person import Person
from store.schemas import Channel, Offer
from tools.context import RunContext, ToolDeps
from tools.contextual import SEGMENT
from tools.offer_features import user_context
from tools.profile import (
    lookup_profile,
    rules_fired,
    subject_facts,
    subject_features,
    subject_holdout,
)
from tools.rewards import CHALLENGER
from tools.schemas import (
    EligibleOffers,
    EligibleOffersInput,
    OfferChoice,
    OfferSummary,
    PolicyCheck,
    PolicyCheckInput,
    RuleFired,
    SelectOfferInput,
)

BANDIT_POLICY = "thompson"
CHALLENGER_BANDIT = f"{BANDIT_POLICY}:{CHALLENGER}"  # the policy experiment's challenger's arms
HOLDOUT_POLICY = "holdout-uniform"


def bandit_segment(ctx: RunContext, policy: PolicyEngine | None = None) -> str:
    """The context segment whose posterior Thompson sampling uses, as the policy file says:
    one per channel (`channel`), one for everyone (`global`), or per lifecycle stage."""
    how = (policy or ctx.deps.policy).policy.bandit_segment
    if how == "global":
        return "all"
    if how == "lifecycle":
        return lookup_profile(ctx).segment
    return ctx.channel.value


def eligible_offers(
    ctx: RunContext, args: EligibleOffersInput, *, policy: PolicyEngine | None = None
) -> EligibleOffers:
    """List the offers this person may be shown now for these items, and why the others may not.

    `policy` evaluates another policy than the live one (shadow mode)."""
    facts = subject_facts(ctx)
    policy = policy or ctx.deps.policy
    known = ctx.memo.get("categories", {})
    missing = [item_id for item_id in args.item_ids if item_id not in known]
    found = {}
    if missing:
        with ctx.deps.db.session() as session:
            found = get_items(session, missing)
    exposures = _exposures(ctx, policy)
    categories = {known[i] for i in args.item_ids if i in known}
    categories |= {item.category for item in found.values()}
    offers = ctx.deps.offers.current()
    verdict = policy.check_offers(offers, facts, item_categories=categories, exposures=exposures)
    return EligibleOffers(
        considered=len(offers),
        candidates=[o.offer_id for o in offers],
        cap_rules=sorted(policy.cap_ids),
        offers=[
            OfferSummary(
                offer_id=o.offer_id,
                title=o.title,
                terms=o.terms,
                discount_percent=o.discount_percent,
                categories=o.categories,
                valid_until=o.valid_until.date().isoformat(),
            )
            for o in verdict.kept
        ],
        removed={
            offer_id: [f.rule_id for f in firings] for offer_id, firings in verdict.removed.items()
        },
        rules_fired=rules_fired(verdict.firings),
    )


def select_offer(
    ctx: RunContext,
    args: SelectOfferInput,
    *,
    policy: PolicyEngine | None = None,
    bandit: str = BANDIT_POLICY,
) -> OfferChoice:
    """Choose one of the eligible offers by Thompson sampling and report how likely that choice was.

    People in a holdout group get an eligible offer drawn uniformly instead (the control). Under
    a priority rule the bandit maximizes sampled conversion × the offer's margin weight. `bandit`
    names the Thompson state to sample (an experiment's challenger keeps its own)."""
    policy = policy or ctx.deps.policy
    segment = bandit_segment(ctx, policy)
    holdout = subject_holdout(ctx)
    if holdout is not None:
        chosen = sorted(args.offer_ids)[int(ctx.deps.bandit.uniform() * len(args.offer_ids))]
        share = round(1 / len(args.offer_ids), 4)
        return OfferChoice(
            offer_id=chosen,
            policy=HOLDOUT_POLICY,
            segment=segment,
            propensity=share,
            probabilities={offer_id: share for offer_id in args.offer_ids},
            estimate=0.0,
            alpha=0.0,
            beta=0.0,
            rewards_seen=0,
            experiment=holdout.rule_id,
        )
    rules = policy.policy
    current = ctx.deps.offers.current()
    kind = rules.bandits.get(ctx.channel, BANDIT_POLICY)
    if kind != BANDIT_POLICY and ctx.deps.contextual is not None:
        return _linear(ctx, policy, kind, args.offer_ids, current)
    arms = _arms(ctx, bandit, segment, args.offer_ids, rules.prior)
    offers = [o for o in current if o.offer_id in arms]
    weights, priority = policy.offer_weights(offers)
    choice = ctx.deps.bandit.choose(arms, weights=weights)
    return OfferChoice(
        offer_id=choice.offer_id,
        policy=bandit,
        segment=segment,
        propensity=choice.propensity,
        probabilities=choice.probabilities,
        estimate=round(choice.arm.mean, 4),
        alpha=choice.arm.alpha,
        beta=choice.arm.beta,
        rewards_seen=choice.arm.pulls,
        priority=priority,
    )


def _linear(
    ctx: RunContext,
    policy: PolicyEngine,
    kind: str,
    offer_ids: list[str],
    current: list[Offer],
) -> OfferChoice:
    """The surface's linear contextual bandit: x(person, offer) from their (consented) features."""
    assert ctx.deps.contextual is not None
    rules = policy.policy
    eligible = [o for o in current if o.offer_id in set(offer_ids)]
    weights, priority = policy.offer_weights(eligible)
    # Reads only (the observations' cache: `store.linear.ObservationCache`): no session.
    with ctx.deps.db.reading() as connection:
        name, choice = ctx.deps.contextual.choose(
            connection,
            kind,
            user=user_context(subject_features(ctx), ctx.channel.value),
            eligible=eligible,
            all_offer_ids=[o.offer_id for o in current],
            priors={k: {"alpha": v.alpha, "beta": v.beta} for k, v in rules.bandit_priors.items()},
            default_prior=(rules.bandit_prior.alpha, rules.bandit_prior.beta),
            weights=weights,
        )
    return OfferChoice(
        offer_id=choice.offer_id,
        policy=name,
        segment=SEGMENT,
        propensity=round(choice.propensity, 4),
        probabilities={k: round(v, 4) for k, v in choice.probabilities.items()},
        estimate=round(choice.estimate, 4),
        stddev=round(choice.stddev, 4),
        rewards_seen=choice.observations,
        features=list(choice.features),
        priority=priority,
    )


def check_policy(ctx: RunContext, args: PolicyCheckInput) -> PolicyCheck:
    """Check that these items and this offer may be shown to this person now."""
    facts = subject_facts(ctx)
    policy = ctx.deps.policy
    with ctx.deps.db.session() as session:
        items = get_items(session, args.item_ids)
    exposures = _exposures(ctx, policy)
    offers = [o for o in ctx.deps.offers.current() if o.offer_id == args.offer_id]
    violations = rules_fired(policy.check_items(items.values(), facts).firings)
    unknown = [item_id for item_id in args.item_ids if item_id not in items]
    if unknown:
        violations.append(_unknown("catalog", unknown))
    if args.offer_id is not None:
        if not offers:
            violations.append(_unknown("offers", [args.offer_id]))
        categories = {item.category for item in items.values()}
        verdict = policy.check_offers(
            offers, facts, item_categories=categories, exposures=exposures
        )
        violations += rules_fired(verdict.firings)
    return PolicyCheck(allowed=not violations, violations=violations)


# The segments `tools.profile.lifecycle_segment` names: a policy with lifecycle segments has its
# arms read in each, before the person's segment is known (a segment not here is read when asked).
LIFECYCLE_SEGMENTS = ("new", "active", "lapsing", "lapsed")


def offer_reads(deps: ToolDeps, channel: Channel, now: datetime) -> OfferStateQuery:
    """What the offer tools will ask of the store during a decision on `channel` at `now`, known
    before the person is read, so that it is read with them (`store.person.read_person`) and
    none of the tools reads again: the offers shown to the subject within the longest frequency
    cap of every policy the request may evaluate (live, shadow, challenger), and the Thompson
    arms of the current offers in each policy's segment (in each lifecycle segment, when a
    policy's segment is the person's lifecycle stage; a holdout's uniform draw reads none of
    them, which costs nothing but a few rows)."""
    runs = [
        (bandit, policy)
        for bandit, policy in (
            (BANDIT_POLICY, deps.policy),
            (BANDIT_POLICY, deps.shadow_policy),
            (CHALLENGER_BANDIT, deps.challenger_policy),
        )
        if policy is not None
    ]
    windows = [cap.window_hours for _, policy in runs for cap in policy.caps]
    since = now - timedelta(hours=max(windows)) if windows else None
    states = set()
    for bandit, policy in runs:
        if deps.contextual is not None and policy.policy.bandits.get(channel, BANDIT_POLICY) != (
            BANDIT_POLICY
        ):
            continue  # the surface's linear bandit reads its own state
        how = policy.policy.bandit_segment
        segments = {"global": ("all",), "lifecycle": LIFECYCLE_SEGMENTS}.get(how, (channel.value,))
        states |= {(bandit, segment) for segment in segments}
    offer_ids = tuple(o.offer_id for o in deps.offers.current()) if states else ()
    return OfferStateQuery(since, tuple(sorted(states)), offer_ids)


def keep_offer_reads(ctx: RunContext, query: OfferStateQuery, person: Person) -> None:
    """Keep in the request's memo what `query` read with the person, for the offer tools; the
    memo ends with the request."""
    if query.since is not None:
        ctx.memo["exposures"] = (query.since, person.shown)
    if query.states:
        ctx.memo["arms"] = _ArmsRead(
            frozenset(query.states), frozenset(query.offer_ids), person.arms
        )


@dataclass(frozen=True)
class _ArmsRead:
    """The arms read with the profile: of `offer_ids`, in each (bandit, segment) of `states`."""

    states: frozenset[tuple[str, str]]
    offer_ids: frozenset[str]
    arms: dict[tuple[str, str], dict[str, ArmState]]


def _arms(
    ctx: RunContext,
    bandit: str,
    segment: str,
    offer_ids: list[str],
    prior: Callable[[str], tuple[float, float]],
) -> dict[str, ArmState]:
    """The posterior of each offer: from the arms read with the profile when they hold these
    offers in this segment, else read now."""
    read: _ArmsRead | None = ctx.memo.get("arms")
    if read is None or (bandit, segment) not in read.states or not read.offer_ids >= set(offer_ids):
        with ctx.deps.db.session() as session:
            return get_arms(session, bandit, segment, offer_ids, prior)
    found = read.arms.get((bandit, segment), {})
    return {
        offer_id: found.get(offer_id) or ArmState(offer_id, *prior(offer_id), 0)
        for offer_id in offer_ids
    }


def _exposures(ctx: RunContext, policy: PolicyEngine) -> dict[str, Exposure]:
    """For each frequency cap, the offers shown to this subject within its window (one read
    over the longest window, counted per cap here)."""
    if not policy.caps:
        return {}
    longest = max(cap.window_hours for cap in policy.caps)
    shown = _shown(ctx, ctx.now - timedelta(hours=longest))
    found = {}
    for cap in policy.caps:
        since = ctx.now - timedelta(hours=cap.window_hours)
        by_offer: dict[str, int] = {}
        by_channel: dict[str, int] = {}
        for offer_id, channel, at in shown:
            if at >= since:
                by_offer[offer_id] = by_offer.get(offer_id, 0) + 1
                by_channel[channel] = by_channel.get(channel, 0) + 1
        found[cap.id] = Exposure(by_offer, by_channel)
    return found


def _shown(ctx: RunContext, since: datetime) -> list[tuple[str, str, datetime]]:
    """(offer id, channel, when) of each offer shown to the subject since `since`: from the
    request's memo when what it holds reaches back that far, else read (and kept there)."""
    read = ctx.memo.get("exposures")
    if read is None or read[0] > since:
        with ctx.deps.db.session() as session:
            read = (since, offer_exposure_times(session, ctx.subject.key, since))
        ctx.memo["exposures"] = read
    return [shown for shown in read[1] if shown[2] >= since]


def _unknown(where: str, ids: list[str]) -> RuleFired:
    return RuleFired(
        rule_id=f"unknown-{where}-id", effect="removed", reason=f"not in the {where}", targets=ids
    )
