"""What a tool run depends on: the services, and the subject bound from the request (never the model)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from store.catalog import PopularCache
from store.db import Database
from store.schemas import Channel
from store.users import Subject

if TYPE_CHECKING:
    from policies.engine import PolicyEngine
    from retrieval.collab import CollabModel
    from retrieval.embedder import CachedEmbedder
    from retrieval.index import VectorIndex
    from retrieval.sequence import ItemItemModel
    from tools.bandit import ThompsonSampling
    from tools.contextual import ContextualBandits
    from tools.offer_book import OfferBook


@dataclass(frozen=True)
class ToolDeps:
    """Long-lived services the tools use; built once per process by the factory."""

    db: Database
    embedder: CachedEmbedder  # the query cache, which decisions fill ahead (`embed_ahead`)
    index: VectorIndex
    policy: PolicyEngine
    bandit: ThompsonSampling
    offers: OfferBook
    collab: CollabModel | None = None  # None until `attune train` (or the seed) has run
    shadow_policy: PolicyEngine | None = None  # a candidate policy evaluated beside the live one
    contextual: ContextualBandits | None = None  # linear bandits, for surfaces that use them
    challenger_policy: PolicyEngine | None = None  # the policy experiment's challenger arm
    itemitem: ItemItemModel | None = None  # the hybrid's re-ranking; None until `attune train`
    popular: PopularCache = field(default_factory=PopularCache)  # wt-d: kept per catalog version


@dataclass
class RunContext:
    """One request's context. `memo` lets tools share work within the request (the profile)."""

    deps: ToolDeps
    subject: Subject
    channel: Channel
    now: datetime
    memo: dict[str, Any] = field(default_factory=dict)
    # The tombstone keys (user, anonymous id; `agents.privacy.rights`) of the person the request
    # is about, None for none: the decision log adds no record while either names an erased
    # identifier (`store.decisions.append_decision`).
    tombstone_refs: tuple[str | None, str | None] = (None, None)
