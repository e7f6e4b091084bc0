"""The offline plan: the chat's deterministic answer when no model may or can answer (none
configured, no consent to LLM processing, an error, the breaker open, the deadline near, a reply
the output guard rejects): profile → retrieve with the message → offer → the offline writer's
copy."""

from __future__ import annotations

import json
import re
from typing import Any

from langgraph.runtime import Runtime

from agents.chat.state import ChatContext, ChatState
from agents.chat.stream import Reidentifier, call_tool, send_token
from agents.writing.writer import Brief, BriefItem, BriefOffer
from tools.profile import lookup_profile, subject_blocked, subject_record

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
    if not turn.items:
        arguments = {"query": turn.query, "k": turn.k} if turn.query else {"k": turn.k}
        call_tool(runtime, ctx, "retrieve_items", _json(arguments))
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
    draft = writer.write(_brief(ctx, top))
    ctx.shown_items, ctx.shown_offer = draft.item_ids, draft.offer_id
    tokens = Reidentifier(ctx.vault, ctx.revealable)
    for piece in re.findall(r"\s*\S+", draft.text):
        send_token(runtime, ctx, tokens.feed(piece))
    send_token(runtime, ctx, tokens.flush())
    return {"reply": draft.text, "route": "finish"}


def _brief(ctx: ChatContext, item_ids: list[str]) -> Brief:
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
    )


def _json(value: Any) -> str:
    return json.dumps(value)
