"""The output guard: generated copy may only name approved items and offers, at their real prices.

Checks, each reported with a stable id: every mentioned id is approved (`grounding-ids`), every
money amount is an approved item's price or its price after the offer's discount
(`grounding-prices`), every percentage is the offer's discount (`grounding-discounts`), the text
fits the channel (`content-length`), no banned phrase appears (`content-banned-phrase`), and no
PII is left but placeholders (`pii-leak`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from policies.pii import KnownValues, PIIGuard
from policies.rules import ContentRules
from store.schemas import Channel

_MONEY = re.compile(
    r"(?:[€$£]\s?(\d+(?:[.,]\d{1,2})?))|(?:(\d+(?:[.,]\d{1,2})?)\s?(?:EUR|USD|GBP|€))"
)
_PERCENT = re.compile(r"(\d+(?:\.\d+)?)\s?%")
_PLACEHOLDER = re.compile(r"<[A-Z_]+_\d+>")


@dataclass(frozen=True)
class Problem:
    check: str
    detail: str


@dataclass(frozen=True)
class CopyVerdict:
    problems: tuple[Problem, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        return "; ".join(f"{p.check}: {p.detail}" for p in self.problems)


def check_copy(
    text: str,
    *,
    mentioned_item_ids: Sequence[str],
    mentioned_offer_id: str | None,
    approved_prices: Mapping[str, float],
    offer_id: str | None,
    discount_percent: float | None,
    offer_text: str = "",
    channel: Channel,
    rules: ContentRules,
    guard: PIIGuard,
    known: KnownValues,
) -> CopyVerdict:
    problems: list[Problem] = []
    stray = [item_id for item_id in mentioned_item_ids if item_id not in approved_prices]
    if stray:
        problems.append(Problem("grounding-ids", f"items not approved: {', '.join(stray)}"))
    if mentioned_offer_id is not None and mentioned_offer_id != offer_id:
        problems.append(Problem("grounding-ids", f"offer not approved: {mentioned_offer_id}"))

    allowed_prices = {round(p, 2) for p in approved_prices.values()} | _amounts(offer_text)
    allowed_percents = {discount_percent} if discount_percent is not None else set()
    allowed_percents |= {float(m.group(1)) for m in _PERCENT.finditer(offer_text)}
    if discount_percent is not None:
        allowed_prices |= {
            round(p * (1 - discount_percent / 100), 2) for p in approved_prices.values()
        }
    for match in _MONEY.finditer(text):
        amount = float((match.group(1) or match.group(2)).replace(",", "."))
        if round(amount, 2) not in allowed_prices:
            problems.append(Problem("grounding-prices", f"{match.group(0)!r} is no approved price"))
    for match in _PERCENT.finditer(text):
        if float(match.group(1)) not in allowed_percents:
            problems.append(
                Problem("grounding-discounts", f"{match.group(0)!r} is not the offer's discount")
            )

    limit = rules.max_length.get(channel)
    if limit is not None and len(text) > limit:
        problems.append(
            Problem("content-length", f"{len(text)} characters, {channel.value} allows {limit}")
        )
    lowered = text.lower()
    for phrase in rules.banned_phrases:
        if phrase.lower() in lowered:
            problems.append(Problem("content-banned-phrase", f"contains {phrase!r}"))

    leaked = guard.contains_pii(_PLACEHOLDER.sub(" ", text), known)
    if leaked:
        problems.append(Problem("pii-leak", f"raw PII of type {', '.join(sorted(set(leaked)))}"))
    return CopyVerdict(tuple(problems))


def _amounts(text: str) -> set[float]:
    """Money amounts stated in approved text (an offer's own title and terms)."""
    return {
        round(float((m.group(1) or m.group(2)).replace(",", ".")), 2) for m in _MONEY.finditer(text)
    }
