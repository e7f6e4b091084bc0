"""Catalog ingest: items are stored, embedded and indexed together, batch by batch."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from itertools import islice

from retrieval.embedder import Embedder
from retrieval.index import VectorIndex
from store.catalog import hidden_ids, upsert_items
from store.db import Database
from store.schemas import Item

BATCH = 256


def index_items(
    db: Database, embedder: Embedder, index: VectorIndex, items: Sequence[Item]
) -> None:
    """Store and index one batch. The index is written inside the database transaction, so a
    failing index rolls the rows back; a re-run is harmless since both writes are idempotent."""
    if not items:
        return
    vectors = embedder.embed([item.text() for item in items])
    with db.session() as session:
        upsert_items(session, items)
        session.flush()
        # A hidden item stays hidden when a feed sends it again: stored, not indexed.
        hidden = hidden_ids(session, [item.item_id for item in items])
        keep = [n for n, item in enumerate(items) if item.item_id not in hidden]
        if keep:
            index.upsert([items[n] for n in keep], vectors[keep])


def ingest_items(
    db: Database,
    embedder: Embedder,
    index: VectorIndex,
    items: Iterable[Item],
    *,
    batch: int = BATCH,
) -> int:
    count = 0
    for chunk in _chunks(items, batch):
        index_items(db, embedder, index, chunk)
        count += len(chunk)
    return count


def _chunks(items: Iterable[Item], size: int) -> Iterator[list[Item]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk
