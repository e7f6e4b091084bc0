"""The services of one process, as the factory builds them: what every graph node, route and
command reads from its context.

This module names the services' types and builds nothing, so the graphs' states and contexts
can hold `Services` without importing the factory, which imports the graphs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from langgraph.graph.state import CompiledStateGraph
from opentelemetry.trace import Tracer

from agents.chat.memory import Chat
from agents.drift import DriftWatch
from agents.llm.client import LLMClient
from agents.metrics import Metrics
from agents.privacy.vocabulary import Vocabulary
from agents.settings import Settings
from agents.writing.writer import OfflineWriter, Writer
from policies.engine import PolicyEngine
from policies.pii import PIIGuard
from retrieval.collab import CollabModel
from retrieval.embedder import Embedder
from retrieval.index import VectorIndex
from retrieval.sequence import ItemItemModel
from store.db import Database
from tools.context import ToolDeps


@dataclass
class Services:
    settings: Settings
    db: Database
    embedder: Embedder
    index: VectorIndex
    policy: PolicyEngine
    pii: PIIGuard
    writer: Writer
    offline_writer: OfflineWriter
    tools: ToolDeps
    graph: CompiledStateGraph[Any, Any, Any, Any]
    degraded: list[str] = field(default_factory=list)
    # Stores outside the database that hold per-person data register an eraser here: it gets
    # the person's subject keys and returns how many records it removed.
    erasers: list[Callable[[list[str]], int]] = field(default_factory=list)
    llm: LLMClient | None = None  # the process's one client (and breaker) for the LLM server
    chat: Chat | None = None  # the chat graph over its checkpoints
    # The words stored free text may keep (`agents.privacy.vocabulary`); the catalog's, reloaded
    # as it grows.
    vocabulary: Vocabulary = field(default_factory=Vocabulary)
    metrics: Metrics = field(default_factory=Metrics)  # the process's Prometheus families
    tracer: Tracer | None = None  # OpenTelemetry spans per decision-graph node, when configured
    drift: DriftWatch = field(default_factory=DriftWatch)  # the latest drift check (agents.drift)

    def close(self) -> None:
        self.index.close()
        self.db.dispose()
        if self.chat is not None:
            self.chat.close()

    def reload_collab(self) -> None:
        """Use the collaborative model last saved by training (user factors live in it)."""
        self.tools = replace(self.tools, collab=CollabModel.load(collab_folder(self.settings)))

    def reload_itemitem(self) -> None:
        """Use the item-item re-ranking model last saved by training (None before any)."""
        self.tools = replace(
            self.tools, itemitem=ItemItemModel.load(itemitem_folder(self.settings))
        )


def collab_folder(settings: Settings) -> Path:
    return settings.home / "collab"


def itemitem_folder(settings: Settings) -> Path:
    """Where `attune train` keeps the item-item re-ranking model (`retrieval.sequence`)."""
    return settings.home / "itemitem"
