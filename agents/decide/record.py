"""The decision record: what the decision log keeps to replay a decision offline, and no PII.

Free text appears only pseudonymized and minimized (`agents.privacy.minimize`: what the guard
missed is masked too, wherever a writer repeated it); the profile appears only as features and
consent; versions of the policy, embedder, writer and prompt are pinned. Chat turns are logged
through this record too (`agents.chat.graph`).

The record is compact (schema 2, about 6 KB instead of 11-16): what replay needs and nothing the
catalog already holds. Candidates keep their id, price, score and the parts of the score (not
their titles and reason sentences); the offer stage keeps ids and the rules that removed offers
(the offers' titles and terms are catalog data); each rule that fired is listed once, in the
explanation, whose per-item reasons are not kept (`explain` writes them from the candidates, the
offer trace and the rules). `bench/record.py` measures the bytes per decision.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from agents.decide.explain import Explanation
from agents.decide.state import DecideContext, DecideState
from agents.llm.completion import Usage
from agents.privacy.minimize import Minimizer
from store.decisions import append_decision
from store.errors import Conflict
from store.features import forget_features
from tools.context import RunContext
from tools.profile import subject_features
from tools.schemas import Candidate, EligibleOffers, OfferChoice

RECORD_SCHEMA = 2
FREE_TEXT = ("request", "content")  # the parts of a record that hold free text
# What a candidate and the offer stage keep: the rest is catalog data or said elsewhere.
CANDIDATE_FIELDS = {"item_id", "price", "score", "parts"}
OFFER_FIELDS = {"considered"}  # the offers' ids and the rules that removed them are in `trace`
# Each part of the record is dumped by one call of its model's serializer (which walks lists
# itself: a call per rule cost more than the serializing), in Python mode where every field is
# a str, a number, a bool or None, or lists and dicts of them keyed by str: JSON mode would
# convert nothing there and costs about twice as much.
_RULES = {"rules_fired": True}
_NO_USAGE = Usage().model_dump(mode="json")  # a decision whose writer called no model


def decision_record(
    state: DecideState, ctx: DecideContext, minimizer: Minimizer | None = None
) -> dict[str, Any]:
    """The record of a decision, minimized with `minimizer` (by default, one built from the
    request's query and context)."""
    services = ctx.services
    if minimizer is None:
        context = state.get("context_redacted", {})
        # The catalog's version as the decision read it with the person (`tools.reads`).
        version = ctx.run.memo.get("catalog_version") if ctx.run is not None else None
        minimizer = Minimizer.for_services(
            services, [state.get("query_redacted"), *context.values()], version=version
        )
    record = _record(state, ctx)
    # Free text only: ids, channels and version strings are data, whatever words a query holds.
    for key in FREE_TEXT:
        record[key] = minimizer.value(record[key])
    record["explanation"]["summary"] = minimizer.text(record["explanation"]["summary"])
    return record


def _record(state: DecideState, ctx: DecideContext) -> dict[str, Any]:
    services = ctx.services
    profile = state["profile"]
    candidates = state["candidates"]
    offers = state.get("offers")
    choice = state.get("choice")
    draft = state["draft"]
    usage = ctx.run.memo.get("llm_usage")
    return {
        "schema": RECORD_SCHEMA,
        "decision_id": ctx.decision_id,
        "created_at": ctx.run.now.isoformat(),
        "subject_key": ctx.run.subject.key,
        "channel": ctx.run.channel.value,
        "request": {
            "query": state.get("query_redacted"),
            "k": state["k"],
            "context": state.get("context_redacted", {}),
        },
        "features": profile.model_dump(mode="json", exclude={"rules_fired"}),
        "retrieval": {
            "strategy": candidates.strategy,
            "candidates": [_candidate(c) for c in candidates.items],
        },
        "offers": offers.model_dump(include=OFFER_FIELDS) if offers else None,
        "choice": choice.model_dump() if choice else None,
        "trace": offer_trace(offers, choice),
        "experiment": state.get("arm")
        or (
            {"rule_id": choice.experiment, "group": "control"}
            if choice is not None and choice.experiment
            else None
        ),
        "shadow": state.get("shadow"),
        "content": {
            "text": draft.text,
            "item_ids": draft.item_ids,
            "offer_id": draft.offer_id,
            "writer": state.get("writer"),
            "attempts": state.get("attempts", 0),
            "guard_problems": state.get("guard_problems", []),
        },
        "explanation": compact_explanation(state["explanation"]),
        "versions": {
            "policy": services.policy.version,
            "embedder": services.embedder.name,
            "writer": state.get("writer"),
            "prompt": state.get("prompt_version"),
            "vector_backend": services.index.backend,
            "collab": ctx.run.deps.collab.version if ctx.run.deps.collab else None,
            "itemitem": ctx.run.deps.itemitem.version if ctx.run.deps.itemitem else None,
            "predictions": subject_features(ctx.run).predictions_version,
        },
        "degraded": list(dict.fromkeys(services.degraded + state.get("degraded", []))),
        # Tokens of every LLM call the decision made (zeros for the offline writer).
        "usage": usage.model_dump(mode="json") if usage is not None else dict(_NO_USAGE),
    }


def _candidate(candidate: Candidate) -> dict[str, Any]:
    """What the record keeps of a candidate: `candidate.model_dump(mode="json",
    include=CANDIDATE_FIELDS, exclude_none=True)`, built directly (a fifth of its cost, for the
    ten or so candidates of every decision): the fields kept are a str and floats, and the
    score's parts all floats or None (`tests/test_decision_writes.py` holds it to that)."""
    parts = candidate.parts.__dict__
    return {
        "item_id": candidate.item_id,
        "price": candidate.price,
        "score": candidate.score,
        "parts": {name: value for name, value in parts.items() if value is not None},
    }


def compact_explanation(explanation: Explanation) -> dict[str, Any]:
    """The explanation as the log keeps it: the summary and every rule that fired (once in the
    record). Its reasons are one per candidate, the chosen offer and each rule, and `explain`
    writes them again from the record's parts."""
    return {
        "summary": explanation.summary,
        "rules_fired": explanation.model_dump(include=_RULES)["rules_fired"],
    }


def log_record(
    run: RunContext, decision_id: str, choice: OfferChoice | None, record: dict[str, Any]
) -> None:
    """Append a decision (of the decide graph or a chat turn) to the log: every row it adds in
    one transaction, one commit, all or nothing.

    A decision adds two rows: its record (`decisions`, which frequency caps count as exposures and
    which holds the experiment arm) and its attribution window (`reward_windows`, as the policy
    file sets it now). Both are written by `store.decisions.append_decision`: statements
    compiled once, sent as their SQL text on one Core connection, with no ORM session around
    them (`Database.core_transaction`) — one statement on PostgreSQL, the decision's INSERT
    then the window's on SQLite. If either row fails, the transaction rolls back and neither
    is kept; a transaction that SQLite refused for a concurrent writer runs again whole.

    Nothing is added, and a Conflict raised, when the person was erased after the decision
    read them (`run.tombstone_refs`, checked in the INSERT): the decision is not answered, as
    one asked after the erasure is not, and the feature row its reads may have stored is
    deleted.
    """
    rewards = run.deps.policy.policy.rewards
    offer_id = choice.offer_id if choice else None
    values = {
        "decision_id": decision_id,
        "subject_key": run.subject.key,
        "user_id": run.subject.user_id,
        "channel": run.channel.value,
        "segment": choice.segment if choice else run.channel.value,
        "offer_id": offer_id,
        "created_at": run.now,
        "record": record,
        # Events on what the decision showed are attributed to it until its window closes.
        "opened_at": run.now,
        "closes_at": run.now + timedelta(hours=rewards.window_hours),
        "item_ids": [c["item_id"] for c in record.get("retrieval", {}).get("candidates", [])],
        "default_reward": rewards.default,
        "user_ref": run.tombstone_refs[0],
        "anonymous_ref": run.tombstone_refs[1],
    }
    if not run.deps.db.core_transaction(lambda connection: append_decision(connection, values)):
        # The decision's reads may have stored their feature row after the erasure removed it
        # (it is rebuilt from their events when missing, as the person is read): removed again.
        run.deps.db.transaction(lambda session: forget_features(session, [run.subject.key]))
        raise Conflict(
            "this person was erased while the decision was being made; nothing about them "
            "was stored"
        )


def offer_trace(offers: EligibleOffers | None, choice: OfferChoice | None) -> dict[str, Any]:
    """The offer's path: candidates → eligible → capped → ranked → chosen, with the rules that
    removed each offer at each stage (a frequency cap is the 'capped' stage; any other rule, the
    'eligible' one)."""
    if offers is None:
        return {"candidates": [], "eligible": [], "capped": {}, "ranked": [], "chosen": None}
    caps = set(offers.cap_rules)
    not_eligible = {
        offer_id: rules
        for offer_id, rules in offers.removed.items()
        if not caps.issuperset(rules)  # a rule that is no cap removed it
    }
    eligible = [o for o in offers.candidates if o not in not_eligible]
    capped = {o: offers.removed[o] for o in eligible if o in offers.removed}
    probabilities = choice.probabilities if choice else {}
    order = sorted(offers.offers, key=lambda o: (-probabilities.get(o.offer_id, 0.0), o.offer_id))
    ranked = [{"offer_id": o.offer_id, "probability": probabilities.get(o.offer_id)} for o in order]
    return {
        "candidates": offers.candidates,
        "eligible": eligible,
        "not_eligible": not_eligible,
        "capped": capped,
        "ranked": ranked,
        "chosen": choice.offer_id if choice else None,
    }
