"""The chat graph: a tool-calling loop over the agent's tools, with thread memory.

guard_input → agent ⇄ tools → guard_output → finish. When no LLM may or can answer (none
configured, no consent to LLM processing, an error, the breaker open, the deadline near, a reply
the output guard rejects), `plan` (`agents.chat.plan`) answers instead: profile → retrieve with
the message → offer → the offline writer's copy, flagged in `degraded`. Nodes stream `token`,
`tool` and `reset` events through LangGraph's custom stream (`agents.chat.stream`); `reset`
withdraws tokens already streamed when the model's reply is replaced.

The state (`agents.chat.state`) holds the conversation and is checkpointed per thread,
pseudonymized and minimized (`agents.privacy.minimize`: words of the person's messages that are
neither common nor catalog words are masked, so what the guard missed is not remembered); the
model sees this turn's message as the guard left it. The raw message, the vault and this turn's
tool results live in the runtime context, never in a checkpoint.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime
from langgraph.types import Checkpointer, Overwrite

from agents.chat.followup import remembered
from agents.chat.plan import plan, shown_memory
from agents.chat.state import ChatContext, ChatInput, ChatState, Route
from agents.chat.stream import Reidentifier, call_tool, send_token
from agents.chat.tools import offers_named, tool_specs
from agents.decide.explain import explain
from agents.decide.record import decision_record, log_record
from agents.decide.state import DecideContext, DecideState
from agents.llm.completion import StreamEnd, TextDelta, Usage
from agents.llm.errors import LLMError
from agents.privacy.minimize import Minimizer
from agents.prompts import PROMPTS
from agents.writing.writer import Draft
from policies.output import check_copy
from tools.profile import lookup_profile, subject_blocked, subject_record

PROMPT_VERSION = "chat-1"
MAX_MODEL_CALLS = 5  # per turn: enough for profile, retrieve, offers, choice and the answer
# Supersteps of one turn at most: the input guard, an agent and a tools step per model call, then
# the output guard, the plan and the finish. A turn is streamed with this limit, so a routing
# mistake ends after a few steps instead of spinning until LangGraph's default of 25.
RECURSION_LIMIT = 1 + 2 * MAX_MODEL_CALLS + 4
HISTORY_MESSAGES = 40  # of earlier turns, sent to the model


def guard_input(state: ChatState, runtime: Runtime[ChatContext]) -> dict[str, Any]:
    """Pseudonymize the message; choose the model or the offline plan."""
    ctx = runtime.context
    redacted = ctx.services.pii.pseudonymize(ctx.message, known=ctx.known, vault=ctx.vault).text
    ctx.turn.query = redacted
    ctx.minimizer = Minimizer.for_services(ctx.services, [redacted])
    route: Route = "agent"
    if subject_blocked(ctx.run, "content") is not None:
        route = "plan"
    elif ctx.llm is None:
        ctx.degraded.append("chat: no LLM configured; answered by the offline plan")
        route = "plan"
    elif (blocked := subject_blocked(ctx.run, "llm")) is not None:
        ctx.degraded.append(
            f"chat: no consent to LLM processing (rule {blocked.rule_id}); answered by the "
            "offline plan"
        )
        route = "plan"
    return {
        # The thread remembers the minimized message; `_prompt` gives the model the whole of it.
        "messages": [{"role": "user", "content": ctx.minimizer.text(redacted)}],
        "route": route,
        "pending": [],
        "model_calls": 0,
        "draft": None,
    }


def agent(state: ChatState, runtime: Runtime[ChatContext]) -> dict[str, Any]:
    """One model call, streamed: tokens out as they come, then tool calls or a draft reply."""
    ctx = runtime.context
    assert ctx.llm is not None  # guard_input routes here only with a model
    tokens = Reidentifier(ctx.vault, ctx.revealable)
    completion = None
    try:
        for event in ctx.llm.stream(
            _prompt(state, ctx), tools=tool_specs(), deadline=ctx.llm_deadline
        ):
            if isinstance(event, TextDelta):
                send_token(runtime, ctx, tokens.feed(event.text))
            elif isinstance(event, StreamEnd):
                completion = event.completion
    except LLMError as error:
        ctx.degraded.append(f"chat: the model failed ({error}); answered by the offline plan")
        return {"route": "plan"}
    send_token(runtime, ctx, tokens.flush())
    assert completion is not None  # a stream that ends without error ends with StreamEnd
    _add_usage(ctx, completion.usage)
    calls = state.get("model_calls", 0) + 1
    if completion.tool_calls:
        return {
            "messages": [
                {
                    "role": "assistant",
                    "content": completion.text or None,
                    "tool_calls": [call.message() for call in completion.tool_calls],
                }
            ],
            "pending": [call.message() for call in completion.tool_calls],
            "model_calls": calls,
            "route": "tools",
        }
    if not completion.text.strip():
        ctx.degraded.append("chat: the model returned an empty reply; answered by the offline plan")
        return {"model_calls": calls, "route": "plan"}
    return {"draft": completion.text, "model_calls": calls, "route": "guard_output"}


def tools(state: ChatState, runtime: Runtime[ChatContext]) -> dict[str, Any]:
    """Run the model's tool calls through the tool layer; refusals go back as results too."""
    ctx = runtime.context
    results = []
    for call in state.get("pending", []):
        function = call["function"]
        outcome = call_tool(runtime, ctx, function["name"], function["arguments"])
        results.append({"role": "tool", "tool_call_id": call["id"], "content": outcome.content})
    route: Route = "agent"
    if state.get("model_calls", 0) >= MAX_MODEL_CALLS:
        ctx.degraded.append(
            f"chat: the model did not answer within {MAX_MODEL_CALLS} calls; answered by the "
            "offline plan"
        )
        route = "plan"
    return {"messages": results, "pending": [], "route": route}


def guard_output(state: ChatState, runtime: Runtime[ChatContext]) -> dict[str, Any]:
    """Check the model's reply: only items and offers returned this turn, at their prices."""
    ctx = runtime.context
    draft = state.get("draft") or ""
    ctx.catalog.refresh(ctx.services.db)
    items = ctx.catalog.named(draft)
    offers = offers_named(draft, ctx.run.deps.offers.current())
    chosen = ctx.turn.chosen_offer
    stray_offers = [o for o in offers if chosen is None or o != chosen.offer_id]
    verdict = check_copy(
        draft,
        mentioned_item_ids=items,
        mentioned_offer_id=stray_offers[0] if stray_offers else (offers[0] if offers else None),
        approved_prices={i.item_id: i.price for i in ctx.turn.items.values()},
        offer_id=chosen.offer_id if chosen else None,
        discount_percent=chosen.discount_percent if chosen else None,
        offer_text=f"{chosen.title}\n{chosen.terms}" if chosen else "",
        channel=ctx.run.channel,
        rules=ctx.services.policy.policy.content,
        guard=ctx.services.pii,
        known=ctx.known,
        approved_text=[i.title for i in ctx.turn.items.values()],
        catalog_offers={o.offer_id: o.title for o in ctx.run.deps.offers.current()},
        disclaimers=ctx.services.policy.policy.content.disclaimers(
            ctx.run.channel, with_offer=chosen is not None
        ),
    )
    if not verdict.ok:
        ctx.degraded.append(
            f"chat: the output guard rejected the model's reply ({verdict.summary()}); "
            "answered by the offline plan"
        )
        return {"route": "plan"}
    ctx.writer, ctx.prompt_version = "openai", PROMPT_VERSION
    ctx.shown_items = items
    ctx.shown_offer = chosen.offer_id if chosen and offers else None
    return {"reply": draft, "route": "finish"}


def finish(state: ChatState, runtime: Runtime[ChatContext]) -> dict[str, Any]:
    """Explain the turn and log it as a decision (PII-free), so feedback can reward it; the
    thread keeps this turn minimized (also where the model repeated what the guard missed)."""
    ctx = runtime.context
    reply = state.get("reply") or ""
    record = _record(state, ctx, reply)
    log_record(ctx.run, ctx.decision_id, ctx.turn.choice if ctx.shown_offer else None, record)
    ctx.record = record
    ctx.reply = reply
    messages = [*state.get("messages", []), {"role": "assistant", "content": reply}]
    searched = ctx.searched if ctx.searched is not None else ctx.turn.query
    memory = remembered(
        state.get("memory"),
        query=ctx.minimizer.text(searched) if searched else None,
        shown=shown_memory(ctx),
    )
    return {
        "memory": memory,
        "messages": Overwrite(ctx.minimizer.value(messages)),
        "reply": ctx.minimizer.text(reply),
        "draft": None,
        "pending": [],
    }


def _record(state: ChatState, ctx: ChatContext, reply: str) -> dict[str, Any]:
    turn = ctx.turn
    profile = lookup_profile(ctx.run)
    candidates = turn.candidates()
    shown = candidates.model_copy(
        update={"items": [turn.items[i] for i in ctx.shown_items if i in turn.items]}
    )
    choice = turn.choice if ctx.shown_offer else None
    decide_state: DecideState = {
        "query": None,
        "k": state.get("k", turn.k),
        "context": {},
        "query_redacted": turn.query,
        "context_redacted": {},
        "profile": profile,
        "candidates": candidates,
        "offers": turn.offers,  # type: ignore[typeddict-item]
        "choice": choice,
        "draft": Draft(text=reply, item_ids=ctx.shown_items, offer_id=ctx.shown_offer),
        "writer": ctx.writer,
        "prompt_version": ctx.prompt_version,  # type: ignore[typeddict-item]
        "attempts": state.get("model_calls", 0),
        "explanation": explain(profile, shown, turn.offers, choice),
        "degraded": ctx.degraded,
    }
    ctx.explanation = decide_state["explanation"]
    decide_context = DecideContext(
        services=ctx.services,
        run=ctx.run,
        vault=ctx.vault,
        known=ctx.known,
        decision_id=ctx.decision_id,
    )
    record = decision_record(decide_state, decide_context, ctx.minimizer)
    record["chat"] = {
        "thread_id": ctx.thread_id,
        "model_calls": state.get("model_calls", 0),
        "tool_calls": ctx.minimizer.value(turn.calls),  # the model's arguments are free text
        "answered_by": "model" if ctx.writer == "openai" else "plan",
    }
    return record


def _prompt(state: ChatState, ctx: ChatContext) -> list[dict[str, Any]]:
    """System prompt, the turn's rules, earlier turns (their text only) and this turn in full."""
    messages = state.get("messages", [])
    last_user = max(i for i, m in enumerate(messages) if m["role"] == "user")
    earlier = [
        m
        for m in messages[:last_user]
        if m["role"] == "user" or (m["role"] == "assistant" and not m.get("tool_calls"))
    ][-HISTORY_MESSAGES:]
    content = ctx.services.policy.policy.content
    limit = content.max_length.get(ctx.run.channel)
    rules = [f"Channel: {ctx.run.channel.value}."]
    record = subject_record(ctx.run)
    if record is not None and lookup_profile(ctx.run).personalized:
        name = ctx.vault.placeholder("FIRST_NAME", record.profile.first_name)
        rules.append(f"The person's first name is written {name}; you may greet them with it.")
    if limit:
        rules.append(f"Your reply must be at most {limit} characters.")
    if content.banned_phrases:
        rules.append("Never use these phrases: " + "; ".join(content.banned_phrases) + ".")
    # This turn's message as the guard left it: the state holds it minimized, for the thread.
    current = {**messages[last_user], "content": ctx.turn.query}
    return [
        {"role": "system", "content": _system_prompt()},
        {"role": "system", "content": " ".join(rules)},
        *earlier,
        current,
        *messages[last_user + 1 :],
    ]


@cache
def _system_prompt() -> str:
    return (PROMPTS / f"{PROMPT_VERSION}.md").read_text()


def _add_usage(ctx: ChatContext, usage: Usage) -> None:
    ctx.run.memo["llm_usage"] = ctx.run.memo.get("llm_usage", Usage()) + usage


def _next(state: ChatState) -> str:
    return state.get("route", "plan")


def build_chat_graph(
    checkpointer: Checkpointer = None,
) -> CompiledStateGraph[ChatState, ChatContext, ChatInput, ChatState]:
    graph = StateGraph(ChatState, context_schema=ChatContext, input_schema=ChatInput)
    graph.add_node("guard_input", guard_input)
    graph.add_node("agent", agent)
    graph.add_node("tools", tools)
    graph.add_node("guard_output", guard_output)
    graph.add_node("plan", plan)
    graph.add_node("finish", finish)
    graph.add_edge(START, "guard_input")
    graph.add_conditional_edges("guard_input", _next, ["agent", "plan"])
    graph.add_conditional_edges("agent", _next, ["tools", "guard_output", "plan"])
    graph.add_conditional_edges("tools", _next, ["agent", "plan"])
    graph.add_conditional_edges("guard_output", _next, ["finish", "plan"])
    graph.add_edge("plan", "finish")
    graph.add_edge("finish", END)
    return graph.compile(name="chat", checkpointer=checkpointer)
