"""Entry points for LangGraph's dev server and Studio (`langgraph.json`): factories that build
the graphs when called, so importing this module starts nothing.

The graphs are compiled without a checkpointer: the dev server brings its own persistence.
Their nodes read the services from the runtime context (`DecideContext`, `ChatContext`), which
holds live objects (database, index, PII guard) that Studio cannot send; Studio shows the
graphs' structure and state schemas, and runs go through the API, which builds that context.
"""

from __future__ import annotations

from typing import Any

from langgraph.graph.state import CompiledStateGraph


def decide_graph() -> CompiledStateGraph[Any, Any, Any, Any]:
    """guard input → profile → retrieve → policy → select offer → generate → guard output →
    explain → log."""
    from agents.decide.graph import build_decide_graph

    return build_decide_graph()


def chat_graph() -> CompiledStateGraph[Any, Any, Any, Any]:
    """guard input → agent ⇄ tools → guard output → finish, with the offline plan as fallback."""
    from agents.chat.graph import build_chat_graph

    return build_chat_graph()
