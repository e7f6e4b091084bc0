"""Segment tools for marketer copy: the items a brief's product focus allows for a whole segment,
and the offer policy allows for all of them.

A segment is treated as its most restricted member: items and offers must suit its youngest
member's age (an unknown age counts as under age), every locale in it, and consent everyone in
it granted. Frequency caps and purchase suppression are per person and apply when a variant is
served, not here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from policies.engine import Facts, Firing
from retrieval.index import IndexUnavailable, ItemFilter
from store.bandit import get_arms
from store.catalog import get_items, popular_items, popularity_of
from store.schemas import Item, Offer
from tools.context import ToolDeps
from tools.offers import BANDIT_POLICY
from tools.profile import rules_fired
from tools.schemas import OfferSummary, RuleFired


@dataclass(frozen=True)
class SegmentItem:
    item: Item
    reason: str


@dataclass(frozen=True)
class SegmentItems:
    items: list[SegmentItem]
    rules_fired: list[RuleFired]
    degraded: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SegmentOffer:
    offer: OfferSummary | None
    reason: str
    eligible: list[str]
    removed: dict[str, list[str]]
    rules_fired: list[RuleFired]


def segment_items(
    deps: ToolDeps,
    *,
    goal: str,
    categories: Sequence[str],
    item_ids: Sequence[str],
    facts: Facts,
    k: int,
    prefer: Sequence[str] = (),
    order: Literal["match", "price_high", "price_low", "popular"] = "match",
) -> SegmentItems:
    """In-stock items of the product focus, allowed for the segment, best match for the goal.

    Items the brief names come first (when policy allows them); then the items nearest to the
    goal's text in the focus categories the segment's rule is about (`prefer`: wine for wine
    lovers), then in the other focus categories; filters pushed into the index, checked again.
    `order` re-orders each round's matches for the segment: the best match first ("match"), the
    dearest or cheapest first, or the most popular first (from the store's popularity).
    """
    constraints = deps.policy.item_constraints(facts)
    fired: list[Firing] = [f for f in constraints.firings if f.effect == "constrained"]
    degraded: list[str] = []
    picked: list[SegmentItem] = []
    if item_ids:
        with deps.db.session() as session:
            named = get_items(session, item_ids)
        verdict = deps.policy.check_items([named[i] for i in item_ids if i in named], facts)
        fired += verdict.firings
        picked += [SegmentItem(item, "named in the brief") for item in verdict.kept]
    preferred = [c for c in categories if c in prefer]
    rounds = [(preferred, "the segment's own"), (list(categories), "the brief's")]
    for round_categories, whose in rounds:
        if not round_categories or len(picked) >= k:
            continue
        flt = ItemFilter(
            categories=tuple(round_categories),
            exclude_ids=tuple(i.item.item_id for i in picked),
            max_min_age=constraints.max_min_age,
            in_stock_only=constraints.in_stock_only,
        )
        focus = " or ".join(c.replace("_", " ") for c in round_categories)
        try:
            vector = deps.embedder.embed([f"{goal} {focus}"])[0]
            found = [
                Item.model_validate(_item_fields(hit.payload))
                for hit in deps.index.search(vector, k=3 * k, flt=flt)
            ]
            reason = f"in {{category}}, {whose} focus: among the closest matches for the goal"
        except IndexUnavailable as error:
            degraded.append(f"vectors: {error}; fell back to popularity")
            with deps.db.session() as session:
                found = [
                    item
                    for item, _ in popular_items(
                        session,
                        limit=3 * k,
                        categories=round_categories,
                        exclude_ids=flt.exclude_ids,
                        max_min_age=flt.max_min_age,
                        in_stock_only=flt.in_stock_only,
                    )
                ]
            reason = f"in {{category}}, {whose} focus: among the most popular items"
        # Whatever the index returned is checked against the item rules again.
        verdict = deps.policy.check_items(found, facts)
        fired += verdict.firings
        kept = _ordered(deps, verdict.kept, order)
        picked += [
            SegmentItem(item, reason.format(category=item.category.replace("_", " ")))
            for item in kept[: k - len(picked)]
        ]
    return SegmentItems(
        items=picked[:k],
        rules_fired=rules_fired(_merge(fired)),
        degraded=list(dict.fromkeys(degraded)),
    )


def segment_offer(
    deps: ToolDeps, *, item_categories: set[str], facts: Sequence[Facts]
) -> SegmentOffer:
    """The eligible offer with the best expected margin-weighted conversion on the channel.

    An offer is eligible when policy allows it under every one of `facts` (one per locale of the
    segment). The choice is greedy on the offer bandit's posterior mean for the channel (times
    the offer's margin weight under a priority rule), so the same request writes the same copy;
    exploration among the copy itself is the variant arms' job.
    """
    offers = deps.offers.current()
    kept: set[str] | None = None
    removed: dict[str, list[str]] = {}
    fired: list[Firing] = []
    for one in facts:
        verdict = deps.policy.check_offers(
            offers, one, item_categories=item_categories, exposures={}
        )
        ids = {o.offer_id for o in verdict.kept}
        kept = ids if kept is None else kept & ids
        for offer_id, firings in verdict.removed.items():
            removed.setdefault(offer_id, [])
            removed[offer_id] += [f.rule_id for f in firings if f.rule_id not in removed[offer_id]]
        fired += verdict.firings
    eligible = [o for o in offers if o.offer_id in (kept or set())]
    channel = facts[0].channel.value if facts else "web"
    if not eligible:
        return SegmentOffer(
            offer=None,
            reason=f"no offer: none of {len(offers)} offers is allowed for everyone in the segment",
            eligible=[],
            removed=removed,
            rules_fired=rules_fired(_merge(fired)),
        )
    rules = deps.policy.policy
    with deps.db.session() as session:
        arms = get_arms(
            session, BANDIT_POLICY, channel, [o.offer_id for o in eligible], rules.prior
        )
    weights, priority = deps.policy.offer_weights(eligible)
    score = {
        o.offer_id: arms[o.offer_id].mean * (weights or {}).get(o.offer_id, 1.0) for o in eligible
    }
    best: Offer = min(eligible, key=lambda o: (-score[o.offer_id], o.offer_id))
    arm = arms[best.offer_id]
    evidence = (
        f"from {arm.pulls} rewarded decisions"
        if arm.pulls
        else "from the prior only, no rewards yet"
    )
    weighting = f" × margin weight {best.margin_weight:g} (rule {priority})" if priority else ""
    reason = (
        f"{best.title}: of {len(eligible)} offers allowed for everyone in the segment, the best "
        f"expected conversion on {channel}{weighting}: {arm.mean:.1%} ({evidence})"
    )
    return SegmentOffer(
        offer=OfferSummary(
            offer_id=best.offer_id,
            title=best.title,
            terms=best.terms,
            discount_percent=best.discount_percent,
            categories=best.categories,
            valid_until=best.valid_until.date().isoformat(),
        ),
        reason=reason,
        eligible=sorted(o.offer_id for o in eligible),
        removed=removed,
        rules_fired=rules_fired(_merge(fired)),
    )


def _ordered(deps: ToolDeps, items: list[Item], order: str) -> list[Item]:
    """The matches in the segment's order; the match order breaks ties."""
    if order == "price_high":
        return sorted(items, key=lambda i: -i.price)
    if order == "price_low":
        return sorted(items, key=lambda i: i.price)
    if order == "popular":
        with deps.db.session() as session:
            scores = popularity_of(session, [i.item_id for i in items])
        return sorted(items, key=lambda i: -scores.get(i.item_id, 0.0))
    return items


def _merge(firings: list[Firing]) -> list[Firing]:
    merged: dict[str, Firing] = {}
    for f in firings:
        known = merged.get(f.rule_id)
        targets = tuple(dict.fromkeys((known.targets if known else ()) + f.targets))
        merged[f.rule_id] = Firing(f.rule_id, f.effect, f.reason, targets)
    return list(merged.values())


def _item_fields(payload: dict) -> dict:
    """The item as the index stores it: every field the item rules read, without the description."""
    return {k: v for k, v in payload.items() if k != "in_stock"}
