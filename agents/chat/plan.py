"""The offline plan: the chat's deterministic answer when no model may or can answer (none
configured, no consent to LLM processing, an error, the breaker open, the deadline near, a reply
the output guard rejects): profile → retrieve with the message → offer → the offline writer's
copy."""

from __future__ import annotations

import json
import re
from typing import Any

from langgraph.runtime import Runtime

from agents.chat.followup import ORDINAL_WORDS, FollowUp, classify, opening
from agents.chat.state import ChatContext, ChatState
from agents.chat.stream import Reidentifier, call_tool, send_token
from agents.writing.writer import Brief, BriefItem, BriefOffer, money
from tools.profile import lookup_profile, subject_blocked, subject_record
from tools.schemas import Candidate, ScoreParts

RETRIEVE_MAX = 10  # `RetrieveArgs.k`'s bound
BRIEF_ITEMS = 3  # items the offline plan's copy mentions at most (as in the decide graph)


def plan(state: ChatState, runtime: Runtime[ChatContext]) -> dict[str, Any]:
    """The deterministic answer: profile → retrieve with the message → offer → offline copy."""
    ctx = runtime.context
    turn = ctx.turn
    if ctx.streamed:
        # The model's words already sent are not the answer: the client drops them.
        reason = ctx.degraded[-1] if ctx.degraded else "the model's reply was replaced"
        runtime.stream_writer({"event": "reset", "data": {"reason": reason}})
        ctx.streamed = False
    call_tool(runtime, ctx, "profile_summary", "{}")
    memory = state.get("memory") or {}
    follow = classify(turn.query, memory) if not turn.items else None
    if follow is not None and follow.kind == "recall":
        if subject_blocked(ctx.run, "content") is not None:
            ctx.writer, ctx.prompt_version = "none", None  # no copy without consent to it
            return {"reply": "", "route": "finish"}
        return _recall(runtime, ctx, memory, follow.position)
    ctx.searched = memory.get("query") if follow is not None else turn.query
    if not turn.items:
        _retrieve(runtime, ctx, follow, memory)
    top = list(turn.items)[:BRIEF_ITEMS]
    if turn.choice is None and top:
        call_tool(runtime, ctx, "eligible_offers", _json({"item_ids": top}))
        if turn.eligible:
            call_tool(runtime, ctx, "select_offer", _json({"offer_ids": list(turn.eligible)}))
    writer = ctx.services.offline_writer
    ctx.writer, ctx.prompt_version = writer.name, writer.prompt_version
    if subject_blocked(ctx.run, "content") is not None:
        ctx.writer, ctx.prompt_version = "none", None  # no copy without consent to it
        return {"reply": "", "route": "finish"}
    turns = int(memory.get("turns", 0))
    if follow is not None and not top:
        text = _nothing_more(follow.kind)
        _say(runtime, ctx, text)
        return {"reply": text, "route": "finish"}
    kind = follow.kind if follow is not None else "new"
    draft = writer.write(_brief(ctx, top, opening(kind, turns) if turns else None))
    ctx.shown_items, ctx.shown_offer = draft.item_ids, draft.offer_id
    _say(runtime, ctx, draft.text)
    return {"reply": draft.text, "route": "finish"}


def _retrieve(
    runtime: Runtime[ChatContext], ctx: ChatContext, follow: FollowUp | None, memory: dict[str, Any]
) -> None:
    """Search this turn's message; a follow-up searches the last turn's query again and keeps
    what refines it, never an item the thread has shown: cheaper than the average shown, or
    anything else."""
    turn = ctx.turn
    query = ctx.searched
    # A follow-up takes as many as the tool gives (its bound is the model's too), to have
    # something left once what was shown is set aside.
    k = turn.k if follow is None else RETRIEVE_MAX
    arguments = {"query": query, "k": k} if query else {"k": k}
    call_tool(runtime, ctx, "retrieve_items", _json(arguments))
    if follow is None:
        return
    seen = set(memory.get("seen", []))
    fresh = {i: c for i, c in turn.items.items() if i not in seen}
    if follow.kind == "cheaper":
        # Below the average of what was shown, cheapest first: what "cheaper" asks for.
        shown = [float(s["price"]) for s in memory["shown"]]
        ceiling = sum(shown) / len(shown)
        kept = [(i, c) for i, c in fresh.items() if c.price < ceiling]
        turn.items = dict(sorted(kept, key=lambda pair: pair[1].price))
    else:
        turn.items = fresh


def _recall(
    runtime: Runtime[ChatContext], ctx: ChatContext, memory: dict[str, Any], position: int
) -> dict[str, Any]:
    """Answer "what was the first one?" from the thread's memory, without a search."""
    shown = memory["shown"]
    ctx.searched = memory.get("query")
    index = len(shown) - 1 if position == -1 else position - 1
    word = ORDINAL_WORDS.get(position, f"#{position}")
    if not 0 <= index < len(shown):
        text = f"I only suggested {len(shown)} last time, so there is no {word} one."
        _say(runtime, ctx, text)
        return {"reply": text, "route": "finish"}
    item = shown[index]
    candidate = Candidate(
        item_id=item["item_id"],
        title=item["title"],
        category=item["category"],
        price=item["price"],
        currency=item["currency"],
        score=0.0,
        parts=ScoreParts(),
        reasons=[f"the {word} item suggested in this conversation"],
    )
    ctx.turn.items = {candidate.item_id: candidate}
    ctx.shown_items = [candidate.item_id]
    text = f"The {word} one was {item['title']} ({money(item['price'], item['currency'])})."
    _say(runtime, ctx, text)
    return {"reply": text, "route": "finish"}


def _nothing_more(kind: str) -> str:
    if kind == "cheaper":
        return "That was the cheapest I found for this; nothing cheaper matches it."
    return "That is everything I found for this; try describing it another way."


def _say(runtime: Runtime[ChatContext], ctx: ChatContext, text: str) -> None:
    tokens = Reidentifier(ctx.vault, ctx.revealable)
    for piece in re.findall(r"\s*\S+", text):
        send_token(runtime, ctx, tokens.feed(piece))
    send_token(runtime, ctx, tokens.flush())


def shown_memory(ctx: ChatContext) -> list[dict[str, Any]]:
    """The items this turn showed, as the thread remembers them (catalog facts only)."""
    return [
        {
            "item_id": c.item_id,
            "title": c.title,
            "category": c.category,
            "price": c.price,
            "currency": c.currency,
        }
        for c in (ctx.turn.items[i] for i in ctx.shown_items if i in ctx.turn.items)
    ]


def _brief(ctx: ChatContext, item_ids: list[str], opening: str | None = None) -> Brief:
    record = subject_record(ctx.run)
    greeting = None
    if record is not None and lookup_profile(ctx.run).personalized:
        greeting = ctx.vault.placeholder("FIRST_NAME", record.profile.first_name)
    offer = ctx.turn.chosen_offer
    content = ctx.services.policy.policy.content
    return Brief(
        channel=ctx.run.channel,
        greeting_name=greeting,
        request=ctx.turn.query,
        items=[BriefItem.of(c) for c in (ctx.turn.items[i] for i in item_ids)],
        offer=BriefOffer.of(offer),
        max_length=content.max_length.get(ctx.run.channel, 600),
        banned_phrases=list(content.banned_phrases),
        disclaimers=content.disclaimers(ctx.run.channel, with_offer=offer is not None),
        opening=opening,
    )


def _json(value: Any) -> str:
    return json.dumps(value)
