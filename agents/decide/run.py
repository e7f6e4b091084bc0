"""One decision, end to end: bind the subject, run the graph, re-identify what consent allows."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import cast

from agents.collector import collect_young
from agents.decide.explain import Explanation
from agents.decide.graph import run_config
from agents.decide.state import DecideContext, DecideOutput
from agents.privacy.rights import anonymous_ref, refuse_erased, tombstone_ref
from agents.services import Services
from agents.tracing import decision_span
from policies.pii import KnownValues, Vault
from retrieval.embedder import Ahead
from store.schemas import Channel, require_subject
from tools.profile import subject_record
from tools.reads import open_decision
from tools.schemas import Candidate, OfferChoice, OfferSummary

# Placeholders that may be turned back into the person's own value in the copy they are shown.
REVEALABLE = {"FIRST_NAME"}


@dataclass(frozen=True)
class DecideRequest:
    channel: Channel
    user_id: str | None = None
    anonymous_id: str | None = None
    query: str | None = None
    context: dict[str, str] | None = None
    k: int = 10


@dataclass(frozen=True)
class Decision:
    decision_id: str
    subject_key: str
    items: list[Candidate]
    offer: OfferSummary | None
    choice: OfferChoice | None
    content: str
    explanation: Explanation
    degraded: list[str]
    policy_version: str


def decide(services: Services, request: DecideRequest, *, now: datetime | None = None) -> Decision:
    """Make one decision, then collect the collector's younger generations
    (`agents.collector`): between decisions, with nothing of the run left alive but the
    decision, rather than wherever the next allocation-triggered collection would fall."""
    require_subject(request.user_id, request.anonymous_id)
    # A new query's vector is begun now on the embedder's thread, beside the person's read and
    # the PII scan; `guard_input` keeps it only if the scan leaves the text as it was sent.
    ahead = services.tools.embedder.embed_ahead(request.query) if request.query else None
    try:
        decision = _decide(services, request, now, ahead)
    finally:
        if ahead is not None:
            ahead.drop()  # unless kept: a failed decision, or a text the guard changed
    collect_young()
    return decision


def _decide(
    services: Services, request: DecideRequest, now: datetime | None, ahead: Ahead | None
) -> Decision:
    now = now or datetime.now(UTC)
    # The subject bound and what the tools read about them read, in one session (tools.reads).
    anonymous = (
        anonymous_ref(services, request.anonymous_id) if request.anonymous_id is not None else None
    )
    run = open_decision(
        services.tools,
        request.user_id,
        request.anonymous_id,
        channel=request.channel,
        now=now,
        refuse=partial(refuse_erased, services),
        erased_ref=anonymous,
    )
    subject = run.subject
    # Checked again as the decision is logged: an erasure may commit while the graph runs.
    run.tombstone_refs = (tombstone_ref(services, subject.user_id), anonymous)
    record = subject_record(run)
    context = DecideContext(
        services=services,
        run=run,
        vault=Vault(),
        known=KnownValues.from_profile(record.profile) if record else KnownValues.empty(),
        decision_id=uuid.uuid4().hex,
        query_ahead=ahead,
    )
    with decision_span(
        services.tracer, channel=request.channel.value, decision_id=context.decision_id
    ):
        # `version="v2"`: the graph streams only its values to hand back the last; the default
        # (v1) streams every node's update beside them, to look for interrupts we never raise.
        output = services.graph.invoke(
            {"query": request.query, "k": request.k, "context": dict(request.context or {})},
            run_config(),
            context=context,
            version="v2",
        )
        state = cast(DecideOutput, output.value)
    services.metrics.decision(
        channel=request.channel.value,
        writer=state.get("writer") or "none",
        degraded=state["record"]["degraded"],
    )
    choice = state.get("choice")
    offer = next(
        (o for o in state["offers"].offers if choice and o.offer_id == choice.offer_id), None
    )
    revealable = REVEALABLE if state["profile"].personalized else set()
    return Decision(
        decision_id=context.decision_id,
        subject_key=subject.key,
        items=state["candidates"].items,
        offer=offer,
        choice=choice,
        content=context.vault.reveal(state["draft"].text, revealable),
        explanation=state["explanation"],
        degraded=state["record"]["degraded"],
        policy_version=services.policy.version,
    )
