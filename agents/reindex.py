"""Rebuilding the vector index from the store, and what `attune serve` does before it listens.

The store is the source of truth; the vector index is derived from it. A missing or empty index
(its folder deleted, a new backend) is rebuilt from the store: every stored item re-embedded,
and the collaborative item vectors restored from the saved model, or retrained from the events
when there is none. The item-item re-ranking model lives outside the index; `start` and
`reindex` fit it when none is saved. Nothing is ever loaded from the demo files to do so.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

from sqlalchemy import select

from agents.privacy.sweep import sweep_erased
from agents.retrain import fit_itemitem
from agents.seed import seed
from agents.services import Services, collab_folder
from retrieval.collab import CollabModel, train
from retrieval.index import COLLAB_VECTOR, RetrievalError
from store.catalog import count_items
from store.models import CatalogItem, HiddenItem
from store.schemas import Item

log = logging.getLogger("attune.reindex")
BATCH = 256


@dataclass(frozen=True)
class ReindexReport:
    items: int  # items embedded and indexed
    collab: str  # "restored", "retrained" or "none" (no events to learn from)
    collab_items: int  # items given a collaborative vector


def reindex(services: Services) -> ReindexReport:
    """Index every stored item again, with its collaborative vector."""
    indexed = 0
    for batch in _stored_items(services):
        services.index.upsert(batch, services.embedder.embed([item.text() for item in batch]))
        indexed += len(batch)
    folder = collab_folder(services.settings)
    model = CollabModel.load(folder)
    if model is not None:
        mode, collab_items = (
            "restored",
            services.index.set_vectors(COLLAB_VECTOR, model.item_vectors()),
        )
    else:
        try:
            trained = train(
                services.db,
                services.index,
                folder,
                full=True,
                consent=services.policy.purpose_for("profiling"),
            )
            mode, collab_items = "retrained", trained.items
        except ValueError as error:  # nothing to learn from yet
            log.info("no collaborative vectors: %s", error)
            mode, collab_items = "none", 0
        services.reload_collab()
    if services.tools.itemitem is None:  # it lives outside the index: fitted only if missing
        fit_itemitem(services)
    optimize = getattr(services.index, "optimize", None)
    if optimize is not None:
        optimize()
    report = ReindexReport(indexed, mode, collab_items)
    log.info("vector index rebuilt from the store: %s", report)
    return report


def index_gap(services: Services) -> tuple[int, int]:
    """(items in the index, items in the store)."""
    with services.db.session() as session:
        stored = count_items(session)
    return services.index.count(), stored


def start(services: Services, demo: Path | None) -> None:
    """Before serving: the demo world into an empty store (if asked), the item-item re-ranking
    model when none is saved (a home from before it existed, or a store filled by ingest), then
    an index that holds every stored item (rebuilt from the store when it is missing or short).
    First of all, once per database, what older code stored about erased people goes
    (`agents.privacy.sweep`)."""
    sweep_erased(services)
    if demo is not None:
        seed(services, demo)
    if services.tools.itemitem is None:
        fit_itemitem(services)
    indexed, stored = index_gap(services)
    if indexed >= stored:
        return
    log.warning(
        "the vector index holds %s of %s stored items; rebuilding it from the store",
        indexed,
        stored,
    )
    try:
        reindex(services)
    except RetrievalError as error:
        # Served anyway: retrieval falls back to popularity and says so in `degraded`.
        log.error("could not rebuild the vector index: %s", error)


def _stored_items(services: Services) -> list[list[Item]]:
    with services.db.session() as session:
        rows = session.scalars(
            select(CatalogItem.data)
            .where(CatalogItem.item_id.not_in(select(HiddenItem.item_id)))
            .order_by(CatalogItem.item_id)
        )
        items = iter([Item.model_validate(data) for data in rows])
    return [batch for batch in iter(lambda: list(islice(items, BATCH)), [])]
