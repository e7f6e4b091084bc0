"""Explanations built from what actually decided: item score parts, the bandit's posterior,
fired rules. The chat explains its turns with them too; copy variants reuse `Reason`."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Literal

from pydantic import BaseModel, Field

from tools.schemas import Candidates, EligibleOffers, OfferChoice, ProfileView, RuleFired


class Reason(BaseModel):
    kind: Literal["item", "offer", "rule"]
    text: str
    item_id: str | None = None
    offer_id: str | None = None
    rule_id: str | None = None


class Explanation(BaseModel):
    summary: str
    reasons: list[Reason]
    rules_fired: list[RuleFired] = Field(description="Every rule that shaped this decision.")


def explain(
    profile: ProfileView,
    candidates: Candidates,
    offers: EligibleOffers | None,
    choice: OfferChoice | None,
) -> Explanation:
    reasons = [
        Reason(kind="item", item_id=c.item_id, text=f"{c.title}: {'; '.join(c.reasons)}")
        for c in candidates.items
    ]
    fired = merge_rules(
        profile.rules_fired + candidates.rules_fired + (offers.rules_fired if offers else [])
    )
    if choice is not None:
        reasons.append(Reason(kind="offer", offer_id=choice.offer_id, text=_offer_words(choice)))
    for rule in fired:
        if rule.effect == "removed":
            reasons.append(
                Reason(
                    kind="rule",
                    rule_id=rule.rule_id,
                    text=f"rule {rule.rule_id} removed {', '.join(rule.targets)} ({rule.reason})",
                )
            )
    return Explanation(
        summary=_summary(profile, candidates, offers, choice, fired),
        reasons=reasons,
        rules_fired=fired,
    )


def merge_rules(rules: Iterable[RuleFired]) -> list[RuleFired]:
    """One entry per (rule, effect), with the targets of every firing."""
    merged: dict[tuple[str, str], RuleFired] = {}
    for rule in rules:
        key = (rule.rule_id, rule.effect)
        if key in merged:
            known = merged[key]
            targets = list(dict.fromkeys(known.targets + rule.targets))
            merged[key] = known.model_copy(update={"targets": targets})
        else:
            merged[key] = rule
    return list(merged.values())


def _offer_words(choice: OfferChoice) -> str:
    if choice.experiment:
        return (
            f"drawn at random among the eligible offers ({choice.propensity:.0%} chance each): "
            f"you are in the control group of experiment {choice.experiment}"
        )
    if choice.features is not None:
        name = "LinTS" if choice.policy.startswith("lints") else "LinUCB"
        return (
            f"chosen by a contextual bandit ({name}) for people like you: predicted to convert "
            f"{choice.estimate:.1%} ± {choice.stddev or 0:.1%} (from {choice.rewards_seen} "
            f"rewarded decisions); it is picked in about {choice.propensity:.0%} of such decisions"
        )
    a, b = choice.alpha, choice.beta
    spread = math.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)))
    evidence = (
        f"from {choice.rewards_seen} rewarded decisions"
        if choice.rewards_seen
        else "from the policy's starting assumption only, no rewards yet"
    )
    priority = f", weighted by its margin (rule {choice.priority})" if choice.priority else ""
    return (
        f"chosen by Thompson sampling{priority}: estimated to convert {choice.estimate:.1%} "
        f"± {spread:.1%} on {choice.segment} ({evidence}); it is picked in about "
        f"{choice.propensity:.0%} of such decisions"
    )


_SOURCE_WORDS = {
    "query": "your request",
    "taste": "your recent activity",
    "collab": "what people with similar tastes chose",
    "recent": "what goes with your recent activity",
}
# The item-item re-ranking (`tools.retrieve`): when it acted it ordered what the sources found.
_RERANK_WORDS = {
    "sequence": "what people often choose next after your recent items",
    "ease": "what people who chose the same items chose",
}


def _ranking(profile: ProfileView, candidates: Candidates) -> str:
    """What ranked the items, named only from the score parts that acted on them."""
    n = len(candidates.items)
    if candidates.strategy == "popular":
        where = (
            " in categories you browse"
            if profile.category_affinity and profile.personalized
            else ""
        )
        return f"{n} items ranked by what is popular{where}."
    acted = [
        name
        for name in _SOURCE_WORDS
        if any(getattr(item.parts, name) for item in candidates.items)
    ]
    others = [_SOURCE_WORDS[name] for name in acted if name != "query"]
    reranked = [
        words
        for name, words in _RERANK_WORDS.items()
        if any(getattr(item.parts, name) for item in candidates.items)
    ]
    if reranked and others:
        return f"{n} items ranked by {_join(reranked)}, among those found by {_join(others)}."
    if reranked:
        return f"{n} items ranked by {_join(reranked)}."
    if "query" in acted and others:
        return f"{n} items matching your request, ordered by it and by {_join(others)}."
    if "query" in acted:
        return f"{n} items ranked by your request."
    if others:
        return f"{n} items ranked by {_join(others)}."
    return f"{n} items."


def _join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def _summary(
    profile: ProfileView,
    candidates: Candidates,
    offers: EligibleOffers | None,
    choice: OfferChoice | None,
    fired: list[RuleFired],
) -> str:
    parts = [_ranking(profile, candidates)]
    if not profile.personalized:
        parts.append("Not personalized: no consent to personalization.")
    if choice is not None and choice.experiment:
        parts.append(f"Offer {choice.offer_id} drawn at random (control group).")
    elif choice is not None:
        method = "a contextual bandit" if choice.features is not None else "Thompson sampling"
        parts.append(
            f"Offer {choice.offer_id} chosen by {method} (estimated {choice.estimate:.1%} conversion)."
        )
    elif offers is not None:
        parts.append(f"No offer: none of {offers.considered} offers is eligible.")
    removed = [r.rule_id for r in fired if r.effect == "removed"]
    if removed:
        parts.append(f"Rules that removed alternatives: {', '.join(removed)}.")
    return " ".join(parts)
