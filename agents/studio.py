"""Entry points for LangGraph's dev server and Studio (`langgraph.json`): a decision and a chat
turn as graphs that the dev server can run from its API.

The service's graphs read live objects (database, index, PII guard) from their runtime context,
which a run of the dev server cannot send. So each graph here takes the request itself — the
person (`user_id` or `anonymous_id`), the channel, the query or message — and its one node runs
the service's own journey (`agents.decide.run.decide`, `agents.chat.turn.chat_turn`) with the
services built from the environment (`ATTUNE_*`, as `attune serve` builds them), once per
process and on a worker thread, never on the server's event loop. The answer is the same
answer the API gives (PII-free but for the first name consent lets it greet); the decision is logged as any other.

Importing this module starts nothing and imports nothing heavy: the dev server imports it on
its event loop, where a blocking call is an error.
"""

from __future__ import annotations

from typing import Any

from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from pydantic import BaseModel
from typing_extensions import TypedDict

from agents.environment import services_from_environment
from store.schemas import Channel


class DecideRun(TypedDict, total=False):
    """A decision asked for from Studio: the person, the channel and what they look for."""

    user_id: str | None
    anonymous_id: str | None
    channel: Channel
    query: str | None
    context: dict[str, str]
    k: int


class DecideRunState(DecideRun, total=False):
    decision: dict[str, Any]  # what POST /v1/decide answers


class ChatRun(TypedDict, total=False):
    """A chat turn asked for from Studio: the person, the channel, the message and its thread."""

    user_id: str | None
    anonymous_id: str | None
    channel: Channel
    message: str
    thread_id: str | None


class ChatRunState(ChatRun, total=False):
    answer: dict[str, Any]  # what POST /v1/chat answers


def decide(state: DecideRunState) -> dict[str, Any]:
    """Run the decision graph for the person: guard input → profile → retrieve → policy →
    select offer → generate → guard output → explain → log."""
    from agents.decide.run import DecideRequest
    from agents.decide.run import decide as run_decision

    channel = Channel(state.get("channel") or Channel.web)
    request = DecideRequest(
        channel=channel,
        user_id=state.get("user_id"),
        anonymous_id=state.get("anonymous_id"),
        query=state.get("query"),
        context=state.get("context") or {},
        k=state.get("k") or 10,
    )
    decision = run_decision(services_from_environment(), request)
    return {
        "decision": {
            "decision_id": decision.decision_id,
            "channel": channel.value,
            "items": [_json(c) for c in decision.items],
            "offer": _json(decision.offer),
            "choice": _json(decision.choice),
            "content": decision.content,
            "explanation": _json(decision.explanation),
            "degraded": decision.degraded,
            "policy_version": decision.policy_version,
        }
    }


def chat(state: ChatRunState) -> dict[str, Any]:
    """Run one turn of the chat graph for the person: guard input → agent ⇄ tools → guard
    output → finish, with the offline plan as fallback."""
    from agents.chat.turn import ChatRequest, chat_turn

    request = ChatRequest(
        message=state.get("message") or "",
        channel=Channel(state.get("channel") or Channel.web),
        user_id=state.get("user_id"),
        anonymous_id=state.get("anonymous_id"),
        thread_id=state.get("thread_id"),
    )
    reply = chat_turn(services_from_environment(), request)
    return {
        "answer": {
            "decision_id": reply.decision_id,
            "thread_id": reply.thread_id,
            "reply": reply.reply,
            "items": [_json(c) for c in reply.items],
            "offer": _json(reply.offer),
            "choice": _json(reply.choice),
            "explanation": _json(reply.explanation),
            "degraded": reply.degraded,
        }
    }


def _json(value: BaseModel | None) -> dict[str, Any] | None:
    return None if value is None else value.model_dump(mode="json")


def decide_graph() -> CompiledStateGraph[Any, Any, Any, Any]:
    """A decision for a person on a channel: items, an offer, copy and the explanation."""
    graph = StateGraph(DecideRunState, input_schema=DecideRun)
    graph.add_node("decide", decide)
    graph.add_edge(START, "decide")
    graph.add_edge("decide", END)
    return graph.compile(name="decide")


def chat_graph() -> CompiledStateGraph[Any, Any, Any, Any]:
    """One chat turn for a person: a grounded reply with items and an offer."""
    graph = StateGraph(ChatRunState, input_schema=ChatRun)
    graph.add_node("chat", chat)
    graph.add_edge(START, "chat")
    graph.add_edge("chat", END)
    return graph.compile(name="chat")
