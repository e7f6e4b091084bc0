"""The output guard: generated copy may only name approved items and offers, at their real prices.

Checks, each reported with a stable id: every mentioned id is approved (`grounding-ids`), every
money amount is an approved item's price or its price after the offer's discount
(`grounding-prices`), every percentage is the offer's discount (`grounding-discounts`), every
date is one the offer states (`grounding-dates`), the text fits the channel (`content-length`),
no banned phrase appears (`content-banned-phrase`), every required disclaimer is there word for
word (`content-disclaimer`), and no PII is left but placeholders (`pii-leak`).
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from policies.pii import KnownValues, PIIGuard
from policies.pii.lru import DigestLRU
from policies.rules import ContentRules
from store.schemas import Channel

# The lookahead names the characters either alternative starts with, so the scan skips the
# others at once (a third of the time on copy); it changes no match.
_MONEY = re.compile(
    r"(?=[€$£\d])(?:(?:[€$£]\s?(\d+(?:[.,]\d{1,2})?))|(?:(\d+(?:[.,]\d{1,2})?)\s?(?:EUR|USD|GBP|€)))"
)
_PERCENT = re.compile(r"(\d+(?:\.\d+)?)\s?(?:%|percent\b|per\s?cent\b)", re.IGNORECASE)
# "use code SAVE90": a code the copy offers must be one the offer's terms state.
_CODE = re.compile(
    r"\b(?:code|coupon|voucher|promo(?:\s+code)?)\b\W{0,3}([A-Za-z0-9][A-Za-z0-9-]{2,})",
    re.IGNORECASE,
)
# Promises that are discounts in all but name: allowed only when the offer itself makes them.
_PROMISES = (
    "free shipping", "free delivery", "free postage", "half price", "half off",
    "buy one get one", "bogo", "free gift", "two for one", "2 for 1", "on the house",
)  # fmt: skip
_PLACEHOLDER = re.compile(r"<[A-Z_]+_\d+>")
# PII that approved text (item titles, offer terms, disclaimers) may not carry into copy: emails
# and payment details, which the guard finds with checks (a domain, Luhn, mod 97) that no catalog
# number passes. Names, places, ages and numbers in titles are the catalog's own ("Thomas and
# Friends", "Teahouse 9", "age 8+"); so, for now, are phone-shaped numbers: in 10,000 real toy
# titles 24 model numbers and EANs read as phones ("Minichamps 400103580", "0077764452031").
QUOTED_PII = frozenset({"EMAIL_ADDRESS", "CREDIT_CARD", "IBAN_CODE"})
_MONTHS = {
    name: number
    for number, names in enumerate(
        [
            ("jan", "january"), ("feb", "february"), ("mar", "march"), ("apr", "april"),
            ("may",), ("jun", "june"), ("jul", "july"), ("aug", "august"),
            ("sep", "sept", "september"), ("oct", "october"), ("nov", "november"),
            ("dec", "december"),
        ],
        start=1,
    )
    for name in names
}  # fmt: skip
_MONTH = "|".join(sorted(_MONTHS, key=len, reverse=True))
# The letters a month's name starts with. "December 31" is read by trying each of the 22 names at
# every word's start; a lookahead for these letters first, and a look back for a word character
# in place of `\b` (the same test before a letter), skip the other words at once: the pattern
# took three fifths of the date checks on copy, and finds the same dates.
_MONTH_START = "".join(sorted({name[0] for name in _MONTHS}))
_DATES = (
    # 2027-12-31
    (re.compile(r"\b(\d{4})-(\d{2})-(\d{2})\b"), ("y", "m", "d")),
    # 31 Dec 2027, 31 December
    (re.compile(rf"\b(\d{{1,2}})(?:st|nd|rd|th)?\s+({_MONTH})\.?(?:,?\s+(\d{{4}}))?\b", re.I), ("d", "mon", "y")),
    # December 31, 2027
    (re.compile(rf"(?<!\w)(?=[{_MONTH_START}])({_MONTH})\.?\s+(\d{{1,2}})(?:st|nd|rd|th)?(?:,?\s+(\d{{4}}))?\b", re.I), ("mon", "d", "y")),
    # 31/12/2027 or 12/31/2027: both readings count
    (re.compile(r"\b(\d{1,2})/(\d{1,2})/(\d{4})\b"), ("a", "b", "y")),
)  # fmt: skip
# What a text must hold (casefolded) for each pattern of `_DATES` to find anything in it: a match
# of this pattern. Each scan of a few hundred characters costs about as much as the rest of a
# check, and most copy holds no ISO date (but hyphens: "Oak-aged"), no slash, and no month unless
# an offer ends on a date; a search that starts with a character ("-") skips to it at once.
# Casefolding maps every character `re.I` lets stand for a month's letter to that letter ("ſ" to
# "s"), so a month the pattern finds is always one of these prefixes; it maps no character to a
# hyphen, a slash or a digit, or those to anything else.
_MONTH_PREFIXES = tuple(sorted({name[:3] for name in _MONTHS}))
_DATE_NEEDS = tuple(
    re.compile(needs)
    for needs in (r"-\d\d-", "|".join(_MONTH_PREFIXES), "|".join(_MONTH_PREFIXES), "/")
)
# The same for `_CODE`: its words are in the folded text whenever the pattern matches.
_CODE_WORDS = ("code", "coupon", "voucher", "promo")


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
    disclaimers: Sequence[str] = (),
    approved_text: Sequence[str] = (),
    catalog_offers: Mapping[str, str] | None = None,
    trusted: bool = False,
) -> CopyVerdict:
    """Check copy; `offer_text` is approved text (the offer's title, terms and end date) whose
    amounts, percentages and dates the copy may repeat; `disclaimers` must appear verbatim.
    `approved_text` (item titles) is catalog text: a brand that looks like a name ("Florence
    linen dress") is not a person's PII when it is quoted from an approved item.
    `catalog_offers` (every offer id → title) lets the guard see offers named in the text
    itself — by id, by title or by the title's name part — and ids that no offer has.

    `trusted` copy is the offline writer's template over the brief: approved text, approved
    prices and the same few words each time. Its PII check remembers what it found in each text
    (`PIIGuard.screen`), so repeated titles and template words cost a digest; the subject's own
    values are still matched every time. Copy a model wrote (`trusted=False`, the default) is
    scanned in full every time. Either way, approved text the copy quotes is checked once per
    text for emails and payment details (`QUOTED_PII`), which are PII whoever approved them."""
    problems: list[Problem] = []
    stray = [item_id for item_id in mentioned_item_ids if item_id not in approved_prices]
    if stray:
        problems.append(Problem("grounding-ids", f"items not approved: {', '.join(stray)}"))
    if mentioned_offer_id is not None and mentioned_offer_id != offer_id:
        problems.append(Problem("grounding-ids", f"offer not approved: {mentioned_offer_id}"))

    stated = _stated(offer_text)
    allowed_prices = {round(p, 2) for p in approved_prices.values()} | stated.amounts
    allowed_percents = {discount_percent} if discount_percent is not None else set()
    allowed_percents |= stated.percents
    if discount_percent is not None:
        allowed_prices |= {
            round(p * (1 - discount_percent / 100), 2) for p in approved_prices.values()
        }
    for match in _MONEY.finditer(text):
        if _amount(match) not in allowed_prices:
            problems.append(Problem("grounding-prices", f"{match.group(0)!r} is no approved price"))
    for match in _PERCENT.finditer(text):
        if float(match.group(1)) not in allowed_percents:
            problems.append(
                Problem("grounding-discounts", f"{match.group(0)!r} is not the offer's discount")
            )

    approved_quotes = " ".join([*approved_text, offer_text]).casefold()
    problems += _offer_mentions(text, catalog_offers or {}, offer_id, approved_quotes)
    terms = stated.terms
    lowered_text = text.casefold()
    for match in _CODE.finditer(text) if _holds_any(lowered_text, _CODE_WORDS) else ():
        if match.group(1).casefold() not in terms:
            problems.append(
                Problem("grounding-codes", f"code {match.group(1)!r} is not the offer's")
            )
    for promise in _PROMISES:
        # The substring test first: a search for each of the eleven phrases cost more than
        # the rest of the grounding checks, and copy seldom holds any.
        if (
            promise in lowered_text
            and _promise(promise).search(lowered_text)
            and promise not in terms
        ):
            problems.append(
                Problem("grounding-promises", f"promises {promise!r}, the offer does not")
            )

    allowed_dates = stated.dates
    for found, readings in _date_mentions(text, lowered_text):
        if not readings & allowed_dates:
            problems.append(Problem("grounding-dates", f"{found!r} is no date of the offer"))
    for disclaimer in disclaimers:
        if disclaimer not in text:
            problems.append(Problem("content-disclaimer", f"missing {disclaimer!r}"))

    limit = rules.max_length.get(channel)
    if limit is not None and len(text) > limit:
        problems.append(
            Problem("content-length", f"{len(text)} characters, {channel.value} allows {limit}")
        )
    lowered = text.lower()
    for phrase in rules.banned_phrases:
        if phrase.lower() in lowered:
            problems.append(Problem("content-banned-phrase", f"contains {phrase!r}"))

    quoted = [*approved_text, *stated.parts, *disclaimers]
    # Approved text the copy quotes: a brand, a place or an age in a title ("Florence linen
    # dress", "Teahouse 9", "age 8+") is no person's, but an email or a card number is.
    leaked = {
        kind
        for approved in dict.fromkeys(quoted)
        if approved in text
        for kind in _quoted_pii(guard, approved)
    }
    scrubbed = _PLACEHOLDER.sub(" ", text)
    for approved in sorted(quoted, key=len, reverse=True):
        scrubbed = scrubbed.replace(approved, " ")
    # What the copy adds to approved text: known values, patterns and the name lists only. The
    # NER model reads catalog words in copy ("Merino Socks", "Darjeeling") as people and places,
    # and copy is written from a brief that was pseudonymized before any writer saw it.
    if trusted:
        # Approved prices (grounded above) are left out, so that the template's words are the
        # same text from one decision to the next and their findings are remembered.
        scrubbed = _MONEY.sub(lambda m: " " if _amount(m) in allowed_prices else m[0], scrubbed)
        leaked.update(guard.screen(scrubbed, known))
    else:
        leaked.update(guard.contains_pii(scrubbed, known, statistical=False))
    if leaked:
        problems.append(Problem("pii-leak", f"raw PII of type {', '.join(sorted(set(leaked)))}"))
    return CopyVerdict(tuple(problems))


@lru_cache(maxsize=len(_PROMISES))
def _promise(phrase: str) -> re.Pattern[str]:
    return re.compile(rf"\b{re.escape(phrase)}\b")


@dataclass(frozen=True)
class _OfferTerms:
    """What `_offer_mentions` looks for of one catalog: each offer's id, folded title and
    folded name part (before a colon), and the prefixes of offer ids ("o_", "promo-")."""

    offers: tuple[tuple[str, str, str], ...]
    prefixes: frozenset[str]


@lru_cache(maxsize=16)
def _offer_terms(catalog: tuple[tuple[str, str], ...]) -> _OfferTerms:
    """The terms of a catalog of offers, derived once per catalog (its ids and titles are the
    key: a changed offer is another catalog, so nothing here can go stale)."""
    offers = tuple(
        (offer_id, title.casefold(), title.split(":")[0].strip().casefold())
        for offer_id, title in catalog
    )
    prefixes = {m.group(1) for oid, _ in catalog if (m := re.match(r"([A-Za-z]+[_-])\d", oid))}
    return _OfferTerms(offers, frozenset(prefixes))


def _offer_mentions(
    text: str, catalog: Mapping[str, str], approved: str | None, quotes: str
) -> list[Problem]:
    """Offers other than the approved one that the text names, and offer-like ids none has."""
    problems = []
    lowered = text.casefold()
    terms = _offer_terms(tuple(catalog.items()))
    for offer_id, title, name in terms.offers:
        if offer_id == approved:
            continue
        by_id = offer_id in text and re.search(rf"(?<![\w-]){re.escape(offer_id)}(?![\w-])", text)
        by_title = title in lowered
        by_name = len(name) >= 6 and name in lowered and name not in quotes
        if by_id or by_title or by_name:
            problems.append(
                Problem("grounding-ids", f"names offer {offer_id}, not the approved one")
            )
    for prefix in (p for p in sorted(terms.prefixes) if p in text):
        for match in re.finditer(rf"(?<![\w-]){re.escape(prefix)}\w+", text):
            if match.group(0) not in catalog:
                problems.append(Problem("grounding-ids", f"{match.group(0)!r} is no offer"))
    return problems


def _date_mentions(
    text: str, folded: str | None = None
) -> list[tuple[str, set[tuple[int | None, int, int]]]]:
    """Each date in the text with its possible readings as (year or None, month, day).
    `folded` is the text casefolded, when the caller has it."""
    found = []
    folded = text.casefold() if folded is None else folded
    for (pattern, order), needs in zip(_DATES, _DATE_NEEDS, strict=True):
        if needs.search(folded) is None:
            continue
        for match in pattern.finditer(text):
            parts = dict(zip(order, match.groups(), strict=True))
            year = int(parts["y"]) if parts.get("y") else None
            if "mon" in parts:
                readings = {(year, _month(parts["mon"]), int(parts["d"]))}
            elif "a" in parts:
                a, b = int(parts["a"]), int(parts["b"])
                readings = {(year, b, a), (year, a, b)}
            else:
                readings = {(year, int(parts["m"]), int(parts["d"]))}
            readings = {r for r in readings if 1 <= r[1] <= 12 and 1 <= r[2] <= 31}
            if readings:
                found.append((match.group(0), readings))
    return found


def _month(name: str) -> int:
    """The number of a month's name as a pattern of `_DATES` found it: case-insensitively, so
    perhaps with a character `re.I` takes for one of its letters ("ſept", with a long s)."""
    found = _MONTHS.get(name.lower())
    if found is None:
        found = next(n for month, n in _MONTHS.items() if re.fullmatch(month, name, re.I))
    return found


def _holds_any(folded: str, needles: tuple[str, ...]) -> bool:
    return any(needle in folded for needle in needles)


@dataclass(frozen=True)
class _Stated:
    """What an offer's approved text (title, terms, end date) states, which copy may repeat."""

    amounts: frozenset[float]  # money amounts
    percents: frozenset[float]
    dates: frozenset[tuple[int | None, int, int]]  # also without their year: copy may drop it
    terms: str  # the text casefolded, for codes and promises
    parts: tuple[str, ...]  # its non-empty lines, which copy quotes


@lru_cache(maxsize=256)
def _stated(offer_text: str) -> _Stated:
    """What `offer_text` states, remembered per text: an offer's text comes back with every
    decision that shows the offer, and what it states is a function of the text alone."""
    dates: set[tuple[int | None, int, int]] = set()
    for _, readings in _date_mentions(offer_text):
        dates |= readings | {(None, month, day) for _, month, day in readings}
    return _Stated(
        amounts=frozenset(_amount(m) for m in _MONEY.finditer(offer_text)),
        percents=frozenset(float(m.group(1)) for m in _PERCENT.finditer(offer_text)),
        dates=frozenset(dates),
        terms=offer_text.casefold(),
        parts=tuple(part for part in offer_text.split("\n") if part),
    )


# What each guard found of `QUOTED_PII` in each approved text, by the text's keyed digest (the
# guard's `DigestLRU`, which holds no text). A finding is a function of the text and the guard,
# whose recognizers never change after it is built (a changed policy builds a new guard), so an
# entry cannot go stale; a guard that is gone takes its entries with it. Titles and offer terms
# come back with every decision that shows them: remembered, each costs a digest instead of the
# guard's screen (its own remembered findings rebuilt as results and their overlaps resolved).
_QUOTED: weakref.WeakKeyDictionary[PIIGuard, DigestLRU[frozenset[str]]] = (
    weakref.WeakKeyDictionary()
)
QUOTED_TEXTS = 8192  # approved texts remembered per guard: a catalog's titles, offers' terms
# What text must hold for any kind of `QUOTED_PII` to be in it: an email address has its "@", a
# card number and an IBAN have digits. The guard runs none of their recognizers on text without
# them (it skips a recognizer whose trigger a text lacks: `policies.pii.guard._NEEDS`, checked by
# `tests/test_pii_gates.py`), so it finds none of them there. Most item titles have neither, and
# cost this search instead of a digest, or on their first decision a screen.
_QUOTABLE = re.compile(r"[@\d]")


def _quoted_pii(guard: PIIGuard, approved: str) -> frozenset[str]:
    """The kinds of `QUOTED_PII` that `guard.screen` finds in approved text."""
    if _QUOTABLE.search(approved) is None:
        return frozenset()
    remembered = _QUOTED.get(guard)
    if remembered is None:
        remembered = _QUOTED.setdefault(guard, DigestLRU(QUOTED_TEXTS))
    found = remembered.get(approved)
    if found is None:
        found = frozenset(kind for kind in guard.screen(approved) if kind in QUOTED_PII)
        remembered.put(approved, found)
    return found


def _amount(match: re.Match[str]) -> float:
    """The amount of a `_MONEY` match, rounded to cents."""
    return round(float((match.group(1) or match.group(2)).replace(",", ".")), 2)
