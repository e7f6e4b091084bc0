"""One chat turn, end to end: bind the subject, run the chat graph on the subject's thread within
the turn's deadline, re-identify what consent allows, and hand back the reply."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from langchain_core.runnables import RunnableConfig

from agents.chat.graph import RECURSION_LIMIT as CHAT_RECURSION_LIMIT
from agents.chat.memory import thread_key
from agents.chat.state import ChatContext
from agents.chat.tools import Turn
from agents.decide.explain import Explanation
from agents.llm.completion import Usage
from agents.privacy.rights import anonymous_ref, refuse_erased, tombstone_ref
from agents.services import Services
from policies.pii import KnownValues, Vault
from store.errors import Conflict
from store.schemas import Channel, require_subject
from store.tombstones import tombstoned
from store.users import resolve_subject
from tools.context import RunContext
from tools.profile import subject_record
from tools.schemas import Candidate, OfferChoice, OfferSummary

# The plan's share of a turn's budget: the model must stop this early, so that the offline
# answer still fits in the deadline (it takes a few tens of milliseconds on the demo world).
OFFLINE_RESERVE_S = 0.25

Emit = Callable[[str, dict[str, Any]], None]


@dataclass(frozen=True)
class ChatRequest:
    message: str
    channel: Channel = Channel.web
    user_id: str | None = None
    anonymous_id: str | None = None
    thread_id: str | None = None  # None: a new thread
    k: int = 10
    deadline_s: float | None = None  # None: the configured budget (never more than it)


@dataclass(frozen=True)
class ChatReply:
    decision_id: str
    thread_id: str
    subject_key: str
    items: list[Candidate]
    offer: OfferSummary | None
    choice: OfferChoice | None
    reply: str
    explanation: Explanation
    degraded: list[str]
    usage: Usage


def _forget_if_erased(services: Services, run: RunContext) -> bool:
    """Whether the person of the turn was erased while it ran; if so, their threads are erased
    again. The thread is checkpointed as the turn ends, and an erasure erases threads after it
    commits: checked after the checkpoint, either this finds the tombstone, or the erasure had
    not committed yet and erases the thread itself."""
    refs = [ref for ref in run.tombstone_refs if ref is not None]
    with services.db.reading() as connection:
        if not tombstoned(connection, refs):
            return False
    for erase in services.erasers:
        erase([run.subject.key])
    return True


def chat_turn(
    services: Services,
    request: ChatRequest,
    *,
    emit: Emit | None = None,
    now: datetime | None = None,
) -> ChatReply:
    """Answer one message; `emit(event, data)` receives the `token`, `tool` and `reset` events
    as they happen (from this thread)."""
    require_subject(request.user_id, request.anonymous_id)
    started = time.monotonic()
    budget = min(
        request.deadline_s or services.settings.chat_deadline_s, services.settings.chat_deadline_s
    )
    now = now or datetime.now(UTC)
    with services.db.session() as session:
        subject = resolve_subject(session, request.user_id, request.anonymous_id)
        # An erased person is refused (a 409): their thread would store them again.
        refuse_erased(services, session, request.user_id, request.anonymous_id)
    run = RunContext(
        deps=services.tools,
        subject=subject,
        channel=request.channel,
        now=now,
        # Checked again as the turn's decision is logged: an erasure may commit meanwhile.
        tombstone_refs=(
            tombstone_ref(services, subject.user_id),
            None if request.anonymous_id is None else anonymous_ref(services, request.anonymous_id),
        ),
    )
    record = subject_record(run)
    thread_id = request.thread_id or uuid.uuid4().hex[:16]
    if services.chat is None:
        raise RuntimeError("the chat graph is not built: build the services with build_services")
    context = ChatContext(
        services=services,
        run=run,
        vault=Vault(),
        known=KnownValues.from_profile(record.profile) if record else KnownValues.empty(),
        decision_id=uuid.uuid4().hex,
        thread_id=thread_id,
        message=request.message,
        llm=services.llm,
        llm_deadline=started + budget - min(OFFLINE_RESERVE_S, budget / 2),
        catalog=services.chat.catalog,
        turn=Turn(run=run, k=request.k),
    )
    config: RunnableConfig = {
        "configurable": {"thread_id": thread_key(subject.key, thread_id)},
        "recursion_limit": CHAT_RECURSION_LIMIT,
    }
    # Checkpointed once, when the turn is over (failed or not): the reply is what the thread
    # remembers.
    try:
        for part in services.chat.graph.stream(
            {"k": request.k},
            config,
            context=context,
            stream_mode=["custom"],
            durability="exit",
            version="v2",
        ):
            if part["type"] == "custom" and emit is not None:
                emit(part["data"]["event"], part["data"]["data"])
    except BaseException:
        _forget_if_erased(services, run)
        raise
    if _forget_if_erased(services, run):
        raise Conflict(
            "this person was erased while the turn was being answered; nothing about them "
            "was stored"
        )
    turn = context.turn
    allowed = context.revealable
    assert context.explanation is not None  # `finish` explains every turn
    services.metrics.fallback("chat", context.record["degraded"])
    return ChatReply(
        decision_id=context.decision_id,
        thread_id=thread_id,
        subject_key=subject.key,
        items=[turn.items[i] for i in context.shown_items if i in turn.items],
        offer=turn.chosen_offer if context.shown_offer else None,
        choice=turn.choice if context.shown_offer else None,
        reply=context.vault.reveal(context.reply, allowed),
        explanation=context.explanation,
        degraded=context.record["degraded"],
        usage=run.memo.get("llm_usage", Usage()),
    )
