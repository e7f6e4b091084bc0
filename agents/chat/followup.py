"""Follow-ups in the offline plan: a short message that refines the previous turn ("cheaper",
"something else", "what was the first one?") is answered from the thread's memory instead of
being searched as new text, and replies open differently from one turn to the next.

The memory is part of the checkpointed state (`ChatState.memory`): the query the last turn
searched (pseudonymized and minimized, as the thread keeps messages), the items it showed (ids,
titles and prices: catalog text, nothing of the person), every item shown so far in the thread,
and the number of turns.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["cheaper", "else", "recall"]

_CHEAPER = re.compile(
    r"\b(cheaper|less expensive|lower[- ]priced?|more affordable|budget|too (expensive|pricey|much))\b"
)
_ELSE = re.compile(
    r"\b(something else|anything else|(show me )?(some )?(other|different|more) (ones?|options?|"
    r"things?|ideas?|items?|suggestions?)|others|another one|what else|not (that|those|these))\b"
)
_ORDINALS = {
    "first": 1,
    "1st": 1,
    "second": 2,
    "2nd": 2,
    "third": 3,
    "3rd": 3,
    "fourth": 4,
    "4th": 4,
    "fifth": 5,
    "5th": 5,
    "last": -1,
}
_RECALL = re.compile(
    r"\b(" + "|".join(_ORDINALS) + r")\s+(one|item|suggestion|pick|thing|option)\b"
    r"|\bwhat was (the |that )?(" + "|".join(_ORDINALS) + r")\b"
)
MAX_WORDS = 12  # a longer message is a new request, even if it says "cheaper" somewhere


@dataclass(frozen=True)
class FollowUp:
    kind: Kind
    position: int = 0  # recall: 1-based, -1 for the last one


def classify(message: str | None, memory: dict[str, Any] | None) -> FollowUp | None:
    """The follow-up this message is, if the thread has a previous turn to refine; else None."""
    if not message or not memory or not memory.get("shown"):
        return None
    text = message.casefold()
    if len(text.split()) > MAX_WORDS:
        return None
    if found := _RECALL.search(text):
        word = found.group(1) or found.group(4)
        return FollowUp("recall", _ORDINALS[word])
    if _CHEAPER.search(text):
        return FollowUp("cheaper")
    if _ELSE.search(text):
        return FollowUp("else")
    return None


def remembered(
    memory: dict[str, Any] | None,
    *,
    query: str | None,
    shown: list[dict[str, Any]],
) -> dict[str, Any]:
    """The memory after a turn that searched `query` and showed `shown`."""
    memory = memory or {}
    seen = list(dict.fromkeys([*memory.get("seen", []), *(s["item_id"] for s in shown)]))
    return {
        "query": query,
        "shown": shown or memory.get("shown", []),
        "seen": seen[-200:],
        "turns": int(memory.get("turns", 0)) + 1,
    }


ORDINAL_WORDS = {1: "first", 2: "second", 3: "third", 4: "fourth", 5: "fifth", -1: "last"}
_OPENINGS: dict[str, tuple[str, ...]] = {
    "cheaper": ("Cheaper picks: ", "Easier on the wallet: ", "For less: "),
    "else": ("Something different: ", "Other ideas: ", "How about these instead: "),
    "new": ("Here is what I found: ", "For that, try: ", "Good one. These fit: ", "Try these: "),
}


def opening(kind: str, turn: int) -> str:
    """The reply's first words on the `turn`-th turn (0-based) of a thread, by kind of answer;
    they rotate so that consecutive replies do not open alike."""
    choices = _OPENINGS[kind]
    return choices[turn % len(choices)]
