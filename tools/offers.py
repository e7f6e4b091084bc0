"""Offer tools: the offers policy allows for this person now, and the bandit's choice among them."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.orm import Session

from store.bandit import get_arms
from store.catalog import get_items
from store.decisions import offer_exposures
from tools.context import RunContext
from tools.profile import rules_fired, subject_facts
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


def bandit_segment(ctx: RunContext) -> str:
    """The context segment whose posterior the bandit uses: one per channel for now."""
    return ctx.channel.value


def eligible_offers(ctx: RunContext, args: EligibleOffersInput) -> EligibleOffers:
    """List the offers this person may be shown now for these items, and why the others may not."""
    facts = subject_facts(ctx)
    policy = ctx.deps.policy
    known = ctx.memo.get("categories", {})
    missing = [item_id for item_id in args.item_ids if item_id not in known]
    with ctx.deps.db.session() as session:
        found = get_items(session, missing) if missing else {}
        exposures = _exposures(ctx, session)
    categories = {known[i] for i in args.item_ids if i in known}
    categories |= {item.category for item in found.values()}
    offers = ctx.deps.offers.current()
    verdict = policy.check_offers(offers, facts, item_categories=categories, exposures=exposures)
    return EligibleOffers(
        considered=len(offers),
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


def select_offer(ctx: RunContext, args: SelectOfferInput) -> OfferChoice:
    """Choose one of the eligible offers by Thompson sampling and report how likely that choice was."""
    segment = bandit_segment(ctx)
    prior = ctx.deps.policy.policy.bandit_prior
    with ctx.deps.db.session() as session:
        arms = get_arms(session, BANDIT_POLICY, segment, args.offer_ids, (prior.alpha, prior.beta))
    choice = ctx.deps.bandit.choose(arms)
    return OfferChoice(
        offer_id=choice.offer_id,
        policy=BANDIT_POLICY,
        segment=segment,
        propensity=choice.propensity,
        probabilities=choice.probabilities,
        estimate=round(choice.arm.mean, 4),
        alpha=choice.arm.alpha,
        beta=choice.arm.beta,
        rewards_seen=choice.arm.pulls,
    )


def check_policy(ctx: RunContext, args: PolicyCheckInput) -> PolicyCheck:
    """Check that these items and this offer may be shown to this person now."""
    facts = subject_facts(ctx)
    policy = ctx.deps.policy
    with ctx.deps.db.session() as session:
        items = get_items(session, args.item_ids)
        exposures = _exposures(ctx, session)
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


def _exposures(ctx: RunContext, session: Session) -> dict[str, dict[str, int]]:
    """For each frequency cap, how often each offer was shown to this subject within its window."""
    return {
        cap.id: offer_exposures(
            session, ctx.subject.key, ctx.now - timedelta(hours=cap.window_hours)
        )
        for cap in ctx.deps.policy.caps
    }


def _unknown(where: str, ids: list[str]) -> RuleFired:
    return RuleFired(
        rule_id=f"unknown-{where}-id", effect="removed", reason=f"not in the {where}", targets=ids
    )
