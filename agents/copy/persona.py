"""Who a segment is and what the brief wants, in the words copy is written for.

A segment's *persona* comes from its rule (the marketer's own words for who is in it): new
customers, active, lapsing or lapsed ones, big spenders, bargain hunters, or everyone. The
brief's *objective* (winback, upsell, launch, cross-sell, loyalty, or a general promotion) is
given, or read from the goal's words. Together they choose which items lead (the newest-to-us
bestsellers for someone new, the dearer pieces for a big spender, the cheaper ones for a
bargain hunter, the crowd's favourites to bring someone back) and how the copy opens and what
its subject says, so two segments of one campaign never get the same text and items.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Literal

from agents.copy.segments import Lifecycle, PriceBand, Segment

BIG_SPEND = 300.0  # total spent from which a rule speaks of big spenders
LOYAL_PURCHASES = 3  # purchases from which a rule speaks of loyal, frequent buyers


class Persona(StrEnum):
    everyone = "everyone"
    new = "new"
    active = "active"
    lapsing = "lapsing"
    lapsed = "lapsed"
    big_spender = "big_spender"
    bargain = "bargain"


class Objective(StrEnum):
    promote = "promote"
    winback = "winback"
    upsell = "upsell"
    launch = "launch"
    cross_sell = "cross_sell"
    loyalty = "loyalty"


Order = Literal["match", "price_high", "price_low", "popular"]

# Which items lead for a persona: the segment's own reason to buy.
ORDER: dict[Persona, Order] = {
    Persona.everyone: "match",
    Persona.active: "match",
    Persona.new: "popular",
    Persona.lapsing: "popular",
    Persona.lapsed: "popular",
    Persona.big_spender: "price_high",
    Persona.bargain: "price_low",
}
_OBJECTIVE_WORDS: list[tuple[Objective, re.Pattern[str]]] = [
    (
        Objective.winback,
        re.compile(
            r"\b(win ?back|bring (them |people |customers )?back|come back|miss(ed)? (you|them)"
            r"|reactivat\w*|re-?engag\w*|lapsed?|lapsing|return)\b"
        ),
    ),
    (Objective.upsell, re.compile(r"\b(upsell|up-sell|upgrade|trade up|premium|step up)\b")),
    (
        Objective.launch,
        re.compile(
            r"\b(launch\w*|new arrivals?|just (in|arrived|landed)|introduc\w*|announc\w*"
            r"|debut|new range|new collection)\b"
        ),
    ),
    (
        Objective.cross_sell,
        re.compile(r"\b(cross-?sell|complete the|pair\w* with|goes with|go with)\b"),
    ),
    (Objective.loyalty, re.compile(r"\b(thank\w*|loyal\w*|vip|reward\w*|appreciat\w*)\b")),
]


def persona_of(segment: Segment) -> Persona:
    """The persona a segment's rule describes; explicit ids and an empty rule are everyone."""
    rule = segment.rule
    if rule is None:
        return Persona.everyone
    lifecycle = set(rule.lifecycle or ())
    if (rule.min_monetary or 0) >= BIG_SPEND or (rule.price_band or []) == [PriceBand.high]:
        return Persona.big_spender
    if lifecycle == {Lifecycle.new} or rule.max_purchases == 0:
        return Persona.new
    if lifecycle and lifecycle <= {Lifecycle.lapsed}:
        return Persona.lapsed
    if lifecycle and lifecycle <= {Lifecycle.lapsing, Lifecycle.lapsed}:
        return Persona.lapsing
    if (rule.min_recency_days or 0) >= 30 or (rule.min_days_since_purchase or 0) >= 60:
        return Persona.lapsing
    if (rule.price_band or []) == [PriceBand.low]:
        return Persona.bargain
    if (rule.min_purchases or 0) >= LOYAL_PURCHASES:
        return Persona.big_spender
    if lifecycle == {Lifecycle.active}:
        return Persona.active
    return Persona.everyone if not rule.uses_features else Persona.active


def objective_of(goal: str, given: Objective | None = None) -> Objective:
    """The brief's objective: as given, else the first one the goal's words name."""
    if given is not None:
        return given
    lowered = goal.casefold()
    for objective, words in _OBJECTIVE_WORDS:
        if words.search(lowered):
            return objective
    return Objective.promote


# Opening lines by objective, then persona (a persona missing falls back to the objective's
# `None` row). Each row holds one line per variant angle; they rotate with the variant.
OPENERS: dict[Objective, dict[Persona | None, tuple[str, ...]]] = {
    Objective.winback: {
        Persona.lapsing: (
            "We have missed you!",
            "It has been a little while.",
            "Come back and see what is new:",
        ),
        Persona.lapsed: (
            "It has been too long!",
            "Welcome back, whenever you are ready:",
            "A lot has changed since your last visit:",
        ),
        Persona.big_spender: (
            "Your favourites are waiting for you:",
            "We kept the best for you:",
            "Back to the good stuff:",
        ),
        Persona.new: (
            "Still looking around? Start here:",
            "Not sure where to begin? Try these:",
            "Our bestsellers, to start with:",
        ),
        None: ("Come back for these:", "Time for another look:", "See what you have been missing:"),
    },
    Objective.upsell: {
        Persona.new: (
            "Start with the good stuff:",
            "Begin with the best:",
            "Go straight to the top:",
        ),
        Persona.lapsing: (
            "Come back to something better:",
            "Return to an upgrade:",
            "Better than last time:",
        ),
        Persona.lapsed: (
            "Come back to something better:",
            "Return to an upgrade:",
            "Better than before:",
        ),
        Persona.active: ("Your next step up:", "Level up your kit:", "An upgrade you will use:"),
        Persona.big_spender: (
            "Ready for an upgrade?",
            "The next step up:",
            "For those who want the best:",
        ),
        Persona.bargain: (
            "A small step up, worth it:",
            "Better, for a little more:",
            "Treat yourself to an upgrade:",
        ),
        None: ("Trade up to these:", "Go one better:", "Worth the upgrade:"),
    },
    Objective.launch: {
        Persona.lapsed: ("All new since you left:", "So much is new:", "New, and worth a return:"),
        Persona.active: ("New, and your style:", "Fresh for you:", "New picks for you:"),
        Persona.bargain: ("New in, at good prices:", "New and good value:", "Fresh, for less:"),
        Persona.new: (
            "Just arrived, and a good place to start:",
            "New in, picked for first-timers:",
            "Brand new:",
        ),
        Persona.big_spender: (
            "First look, for our best customers:",
            "New in, and worth it:",
            "Just landed:",
        ),
        Persona.lapsing: (
            "New since your last visit:",
            "Fresh arrivals to come back for:",
            "Just in:",
        ),
        None: ("New in:", "Just arrived:", "Fresh from the shelves:"),
    },
    Objective.cross_sell: {
        None: ("These go well together:", "Complete the set:", "Pairs nicely with what you love:"),
    },
    Objective.loyalty: {
        Persona.big_spender: (
            "Thank you for being one of our best customers.",
            "A thank-you, just for you:",
            "You make us better. Thank you:",
        ),
        None: ("Thank you for shopping with us.", "A little thank-you:", "For our regulars:"),
    },
    Objective.promote: {
        Persona.new: (
            "Welcome! Our bestsellers to start with:",
            "New here? Start with these:",
            "Our most loved picks:",
        ),
        Persona.lapsing: (
            "Been a while? These are popular right now:",
            "What everyone is buying:",
            "Worth another look:",
        ),
        Persona.lapsed: (
            "Long time no see! Popular right now:",
            "Catch up on our favourites:",
            "Worth another look:",
        ),
        Persona.big_spender: ("Our finest, picked for you:", "Only the best:", "Top of the range:"),
        Persona.bargain: (
            "Great value picks:",
            "Good things, good prices:",
            "Value you will like:",
        ),
        Persona.active: ("Picked for you:", "More of what you like:", "You might like these next:"),
        None: ("Picked for everyone:", "Popular picks:", "Something for everyone:"),
    },
}
SUBJECTS: dict[Objective, dict[Persona | None, tuple[str, ...]]] = {
    Objective.winback: {
        Persona.lapsing: ("We miss you", "It has been a while", "Come back and see"),
        Persona.lapsed: ("Welcome back", "It has been too long", "A lot is new"),
        Persona.big_spender: (
            "Your favourites await",
            "We kept the best for you",
            "Back to the good stuff",
        ),
        None: ("Time for another look", "Come back for these", "See what is new"),
    },
    Objective.upsell: {
        None: ("Ready for an upgrade?", "Go one better", "Worth the upgrade"),
    },
    Objective.launch: {
        Persona.new: ("Just arrived for you", "New in: start here", "Brand new"),
        None: ("New in", "Just arrived", "Fresh arrivals"),
    },
    Objective.cross_sell: {None: ("Complete the set", "Goes well together", "Perfect pairs")},
    Objective.loyalty: {None: ("Thank you", "A little thank-you", "For our regulars")},
    Objective.promote: {
        Persona.new: ("Welcome: our bestsellers", "New here? Start here", "Most loved picks"),
        Persona.lapsing: ("Popular right now", "What everyone is buying", "Worth another look"),
        Persona.lapsed: ("Catch up on favourites", "Popular right now", "Worth another look"),
        Persona.big_spender: ("Our finest, for you", "Only the best", "Top of the range"),
        Persona.bargain: ("Great value picks", "Good things, good prices", "Value you will like"),
        Persona.active: ("Picked for you", "More of what you like", "You might like these"),
        None: ("Picked for everyone", "Popular picks", "Something for everyone"),
    },
}


def lines(
    table: dict[Objective, dict[Persona | None, tuple[str, ...]]],
    objective: Objective,
    persona: Persona,
) -> tuple[str, ...]:
    row = table[objective]
    return row.get(persona) or row[None]
