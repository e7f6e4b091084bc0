"""The tools the chat model may call: typed arguments, no subject among them, refusals as results.

The subject is bound from the request (`RunContext`); no argument can name a person. Arguments
are validated by pydantic models that forbid unknown fields, then checked by `identity_in`: any
value that looks like an email or a user or anonymous id is refused, the person's own included.
Items and offers may only be named once a tool returned them in this turn (`Turn`), and the
bandit draws one offer per turn. A refusal goes back to the model as the tool's result; the
caller streams a redacted copy of the arguments, never the raw ones.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import func, select

from store.db import Database
from store.models import CatalogItem, IdentityLink, User
from tools.context import RunContext
from tools.offers import check_policy as policy_check
from tools.offers import eligible_offers as offers_for
from tools.offers import select_offer as bandit_choice
from tools.profile import lookup_profile
from tools.retrieve import retrieve_candidates
from tools.schemas import (
    Candidate,
    Candidates,
    EligibleOffers,
    EligibleOffersInput,
    OfferChoice,
    OfferSummary,
    PolicyCheckInput,
    RetrieveInput,
    SelectOfferInput,
)

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_EMAIL_PLACEHOLDER = re.compile(r"<EMAIL_ADDRESS_\d+>")
_SUBJECT_KEY = re.compile(r"\b(?:user|anon):\S+", re.IGNORECASE)
_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@-]*")
_PROFILE_HIDDEN = {"subject_key", "user_id", "age", "recent_item_ids", "rules_fired"}


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NoArgs(_Args):
    pass


class RetrieveArgs(_Args):
    query: str | None = Field(
        None,
        max_length=500,
        description="What to look for, in the person's words; keep placeholders as they are.",
    )
    k: int = Field(5, ge=1, le=10, description="How many items to return.")


class ItemsArgs(_Args):
    item_ids: list[str] = Field(
        min_length=1, max_length=10, description="Ids of items retrieve_items returned this turn."
    )


class OffersArgs(_Args):
    offer_ids: list[str] = Field(
        min_length=1,
        max_length=50,
        description="Ids of offers eligible_offers returned this turn.",
    )


class CheckArgs(_Args):
    item_ids: list[str] = Field(default_factory=list, max_length=10)
    offer_id: str | None = None


class Refused(Exception):
    """A tool call the tool layer will not run; the message goes back to the model."""


@dataclass
class Turn:
    """One chat turn's tool results: the only items and offers its reply may name."""

    run: RunContext
    k: int = 10
    query: str | None = None  # the person's message, pseudonymized
    retrievals: list[Candidates] = field(default_factory=list)
    items: dict[str, Candidate] = field(default_factory=dict)
    offers: EligibleOffers | None = None
    choice: OfferChoice | None = None
    calls: list[dict[str, Any]] = field(default_factory=list)  # name, redacted arguments, status

    @property
    def eligible(self) -> dict[str, OfferSummary]:
        return {o.offer_id: o for o in self.offers.offers} if self.offers else {}

    @property
    def chosen_offer(self) -> OfferSummary | None:
        return self.eligible.get(self.choice.offer_id) if self.choice else None

    def candidates(self) -> Candidates:
        """Every item retrieved this turn, first retrieval first, as one candidate list."""
        strategy = self.retrievals[-1].strategy if self.retrievals else "query"
        return Candidates(
            strategy=strategy,
            items=list(self.items.values()),
            rules_fired=[r for found in self.retrievals for r in found.rules_fired],
            degraded=[d for found in self.retrievals for d in found.degraded],
        )


def profile_summary(turn: Turn, args: NoArgs) -> dict[str, Any]:
    """What we know about the person you are talking to: interests, recent activity, consent.
    No name, contact details or ids."""
    return lookup_profile(turn.run).model_dump(mode="json", exclude=_PROFILE_HIDDEN)


def retrieve_items(turn: Turn, args: RetrieveArgs) -> dict[str, Any]:
    """Find in-stock catalog items this person may be shown, matching a request and their taste."""
    found = retrieve_candidates(turn.run, RetrieveInput(query=args.query, k=args.k))
    turn.retrievals.append(found)
    for item in found.items:
        turn.items.setdefault(item.item_id, item)
    return {
        "strategy": found.strategy,
        "items": [
            item.model_dump(
                mode="json",
                include={"item_id", "title", "category", "price", "currency", "reasons"},
            )
            for item in found.items
        ],
    }


def eligible_offers(turn: Turn, args: ItemsArgs) -> dict[str, Any]:
    """List the offers policy allows for this person now, for items you retrieved this turn."""
    _returned_items(turn, args.item_ids)
    turn.offers = offers_for(turn.run, EligibleOffersInput(item_ids=args.item_ids))
    return {
        "offers": [o.model_dump(mode="json", exclude={"categories"}) for o in turn.offers.offers],
        "not_eligible": len(turn.offers.removed),
    }


def select_offer(turn: Turn, args: OffersArgs) -> dict[str, Any]:
    """Choose the one offer to show among eligible ones; call it once per turn and name only
    the offer it returns."""
    if turn.choice is not None:
        raise Refused(f"an offer was already chosen this turn: {turn.choice.offer_id}")
    stray = [o for o in args.offer_ids if o not in turn.eligible]
    if stray:
        raise Refused(
            f"not returned by eligible_offers this turn: {', '.join(stray)}; "
            "call eligible_offers first and pass only the ids it returned"
        )
    turn.choice = bandit_choice(turn.run, SelectOfferInput(offer_ids=args.offer_ids))
    offer = turn.eligible[turn.choice.offer_id]
    return offer.model_dump(mode="json", exclude={"categories"})


def check_policy(turn: Turn, args: CheckArgs) -> dict[str, Any]:
    """Check that these items and this offer may be shown to this person now."""
    _returned_items(turn, args.item_ids)
    if args.offer_id is not None and args.offer_id not in turn.eligible:
        raise Refused(f"offer {args.offer_id} was not returned by eligible_offers this turn")
    verdict = policy_check(
        turn.run, PolicyCheckInput(item_ids=args.item_ids, offer_id=args.offer_id)
    )
    return {
        "allowed": verdict.allowed,
        "violations": [{"rule_id": v.rule_id, "reason": v.reason} for v in verdict.violations],
    }


def _returned_items(turn: Turn, item_ids: Iterable[str]) -> None:
    stray = [i for i in item_ids if i not in turn.items]
    if stray:
        raise Refused(
            f"not returned by retrieve_items this turn: {', '.join(stray)}; "
            "name only items a tool returned"
        )


Tool = Callable[[Turn, Any], dict[str, Any]]
TOOLS: dict[str, tuple[Tool, type[_Args]]] = {
    fn.__name__: (fn, args)
    for fn, args in (
        (profile_summary, NoArgs),
        (retrieve_items, RetrieveArgs),
        (eligible_offers, ItemsArgs),
        (select_offer, OffersArgs),
        (check_policy, CheckArgs),
    )
}


@cache
def tool_specs() -> list[dict[str, Any]]:
    """The tools in the chat completions format: name, docstring, JSON schema of the arguments
    (built once; read-only)."""
    specs = []
    for name, (fn, args) in TOOLS.items():
        schema = args.model_json_schema()
        schema.pop("title", None)
        specs.append(
            {
                "type": "function",
                "function": {
                    "name": name,
                    "description": " ".join((fn.__doc__ or "").split()),
                    "parameters": schema,
                },
            }
        )
    return specs


@dataclass(frozen=True)
class Outcome:
    """A tool call's result: what goes back to the model, and what may be shown and logged."""

    name: str
    arguments: dict[str, Any]  # redacted
    status: str  # "ok" | "refused"
    content: str  # JSON for the model

    def event(self) -> dict[str, Any]:
        return {"name": self.name, "arguments": self.arguments, "status": self.status}


def run_tool(
    turn: Turn,
    name: str,
    raw_arguments: str,
    *,
    redact: Callable[[str], str],
) -> Outcome:
    """Validate and run one tool call; every refusal is an `Outcome` with status "refused"."""
    try:
        arguments = json.loads(raw_arguments or "{}")
    except json.JSONDecodeError:
        return _refused(name, {}, "the arguments are not valid JSON")
    if not isinstance(arguments, dict):
        return _refused(name, {}, "the arguments must be a JSON object")
    db = turn.run.deps.db
    found = identity_in(arguments, db)
    # Ids the tools returned are shown as they are; other text goes through the PII guard.
    returned = set(turn.items) | set(turn.eligible)
    shown = _redacted(arguments, lambda t: t if t in returned else redact(t), found)
    if name not in TOOLS:
        return _refused(name, shown, f"no such tool; the tools are {', '.join(TOOLS)}")
    if found:
        return _refused(
            name,
            shown,
            "arguments may not name a person (an email, a user or visitor id): the tools only "
            "ever act for the person you are talking to",
        )
    fn, model = TOOLS[name]
    try:
        args = model.model_validate(arguments)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(arguments)'}: {e['msg']}"
            for e in error.errors()
        )
        return _refused(name, shown, f"invalid arguments: {problems}")
    try:
        result = fn(turn, args)
    except Refused as refusal:
        return _refused(name, shown, str(refusal))
    return Outcome(name, shown, "ok", json.dumps(result, ensure_ascii=False))


def _refused(name: str, arguments: dict[str, Any], reason: str) -> Outcome:
    return Outcome(name, arguments, "refused", json.dumps({"refused": reason}))


def identity_in(arguments: Any, db: Database) -> set[str]:
    """The values in `arguments` (keys included, at any depth) that look like a person: an email
    (or its placeholder), a subject key, or a user or anonymous id the store knows."""
    texts = list(_strings(arguments))
    found = {m.group(0) for t in texts for m in _EMAIL.finditer(t)}
    found |= {m.group(0) for t in texts for m in _EMAIL_PLACEHOLDER.finditer(t)}
    found |= {m.group(0) for t in texts for m in _SUBJECT_KEY.finditer(t)}
    tokens = {m.group(0).rstrip(".:-") for t in texts for m in _TOKEN.finditer(t)}
    tokens.discard("")
    if tokens:
        with db.session() as session:
            found |= set(session.scalars(select(User.user_id).where(User.user_id.in_(tokens))))
            found |= set(
                session.scalars(
                    select(IdentityLink.external_id).where(IdentityLink.external_id.in_(tokens))
                )
            )
    return found


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


def _redacted(value: Any, redact: Callable[[str], str], identities: set[str]) -> Any:
    """Arguments fit to stream and log: identities masked, free text pseudonymized."""
    if isinstance(value, str):
        for identity in sorted(identities, key=len, reverse=True):
            value = value.replace(identity, "<IDENTIFIER>")
        return redact(value)
    if isinstance(value, dict):
        return {
            _redacted(str(k), redact, identities): _redacted(v, redact, identities)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_redacted(v, redact, identities) for v in value]
    return value


class CatalogNames:
    """Every catalog item's id and title, to find the items a reply names; reloaded when the
    number of items changes. Shared by the process's chat turns; thread-safe."""

    MIN_TITLE = 6  # shorter titles are ordinary words more often than names

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count = -1
        self._titles: dict[str, str] = {}
        self._ids: set[str] = set()

    def refresh(self, db: Database) -> None:
        with db.session() as session:
            count = session.scalar(select(func.count()).select_from(CatalogItem)) or 0
            if count == self._count:
                return
            rows = session.execute(select(CatalogItem.item_id, CatalogItem.data)).all()
        with self._lock:
            self._ids = {item_id for item_id, _ in rows}
            self._titles = {
                str(data.get("title", "")).casefold(): item_id
                for item_id, data in rows
                if len(str(data.get("title", ""))) >= self.MIN_TITLE
            }
            self._count = count

    def named(self, text: str) -> list[str]:
        """Ids of the items `text` names, by id or by full title, in order of appearance."""
        lowered = text.casefold()
        with self._lock:
            hits = {m.start(): m.group(0) for m in _TOKEN.finditer(text) if m.group(0) in self._ids}
            for title, item_id in self._titles.items():
                start = lowered.find(title)
                if start != -1 and _bounded(lowered, start, start + len(title)):
                    hits.setdefault(start, item_id)
        return list(dict.fromkeys(hits[k] for k in sorted(hits)))


def offers_named(text: str, offers: Iterable[Any]) -> list[str]:
    """Ids of the offers `text` names, by id or by full title."""
    lowered = text.casefold()
    named = []
    for offer in offers:
        title = offer.title.casefold()
        if re.search(rf"(?<![\w-]){re.escape(offer.offer_id)}(?![\w-])", text) or (
            title and title in lowered
        ):
            named.append(offer.offer_id)
    return named


def _bounded(text: str, start: int, end: int) -> bool:
    before = text[start - 1] if start > 0 else " "
    after = text[end] if end < len(text) else " "
    return not before.isalnum() and not after.isalnum()
