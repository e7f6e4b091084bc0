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
from retrieval.sequence import ItemItemModel, ItemItemParams
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
        self.tools.embedder.close()
        self.index.close()
        self.db.dispose()
        if self.chat is not None:
            self.chat.close()

    def reload_collab(self) -> None:
        """Use the collaborative model last saved by training (user factors live in it)."""
        self.tools = replace(self.tools, collab=CollabModel.load(collab_folder(self.settings)))

    def reload_itemitem(self) -> None:
        """Use the item-item re-ranking model last saved by training (None before any), with the
        re-ranking weights and pool of the settings."""
        self.tools = replace(self.tools, itemitem=load_itemitem(self.settings))


def collab_folder(settings: Settings) -> Path:
    return settings.home / "collab"


def itemitem_folder(settings: Settings) -> Path:
    """Where the item-item re-ranking model (`retrieval.sequence`) is kept: fitted by seeding,
    by a start or reindex that finds none, by `attune train` and by a drift retrain."""
    return settings.home / "itemitem"


def itemitem_params(settings: Settings) -> ItemItemParams:
    """The item-item parameters the service fits and re-ranks with: `ItemItemParams`' defaults
    (what the MovieLens suite measured) with the weights and pool of the settings."""
    return replace(
        ItemItemParams(),
        transition_weight=settings.itemitem_transition_weight,
        qdrant_weight=settings.itemitem_qdrant_weight,
        pool=settings.itemitem_pool,
    )


def load_itemitem(settings: Settings) -> ItemItemModel | None:
    """The saved item-item model, re-ranking with the settings' weights and pool (changing them
    needs a restart, not a refit); None before any fit, or when it learned no item (no events
    yet), so that retrieval keeps Qdrant's order without reading the person's history."""
    model = ItemItemModel.load(itemitem_folder(settings), itemitem_params(settings))
    return model if model is not None and model.item_ids else None
