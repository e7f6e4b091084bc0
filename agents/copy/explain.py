"""Why a copy variant says what it says: its segment, its items, its offer and the rules that
fired, from what actually decided (the scan's counts, the tools' reasons, the guard's verdict)."""

from __future__ import annotations

from agents.copy.audience import SegmentAudience
from agents.copy.segments import Segment
from agents.copy.state import CopyExplanation
from agents.copy.writer import Written
from agents.decide.explain import Reason, merge_rules
from policies.copy import ChannelSpec
from tools.schemas import RuleFired
from tools.segment import SegmentItems, SegmentOffer


def explain_variant(
    seg: Segment,
    audience: SegmentAudience,
    items: SegmentItems,
    offer: SegmentOffer,
    written: Written,
    angle: str,
    index: int,
    spec: ChannelSpec,
) -> CopyExplanation:
    who = f"{seg.name}: {audience.size} people ({seg.describe()})"
    if audience.excluded:
        left = ", ".join(f"{rule} left out {n}" for rule, n in sorted(audience.excluded.items()))
        who += f"; consent: {left}"
    if audience.unknown_ids:
        who += f"; {audience.unknown_ids} ids are no user"
    age = audience.age_for_rules
    who += (
        f". Items and offers suit age {age}, the youngest member's."
        if age is not None
        else ". Some members' age is unknown: items and offers without an age limit only."
    )
    featured = {i.item.item_id: i for i in items.items}
    reasons = [
        Reason(kind="item", item_id=item_id, text=f"{i.item.title}: {i.reason}")
        for item_id in written.item_ids
        if (i := featured.get(item_id)) is not None
    ]
    consent = [
        RuleFired(
            rule_id=rule,
            effect="removed",
            reason=f"left {n} people out of the audience (no consent)",
        )
        for rule, n in sorted(audience.excluded.items())
    ]
    fired = merge_rules([*consent, *items.rules_fired, *offer.rules_fired])
    offer_words = offer.reason
    if offer.offer is not None and written.offer_id is None:
        offer_words += "; this variant does not mention it (it did not fit or broke a rule)"
    retry = f", after {written.attempts} attempts" if written.attempts > 1 else ""
    variant = (
        f"variant {index + 1}: angle '{angle}', written by the {written.writer} writer{retry}; "
        + ("every check passed" if written.passed else "withheld: " + "; ".join(written.problems))
    )
    summary = (
        f"{spec.channel.value} copy for {audience.size} people in {seg.name}, featuring "
        f"{len(written.item_ids)} item(s)"
        + (f" and offer {written.offer_id}" if written.offer_id else "")
        + "."
    )
    return CopyExplanation(
        summary=summary,
        segment=who,
        items=reasons,
        offer=offer_words,
        variant=variant,
        rules_fired=fired,
    )
