"""Vector index on Qdrant Edge: an embedded, in-process shard kept in one folder.

Only one process may open a shard folder at a time: Qdrant Edge locks the folder's write-ahead
log, and a second `EdgeIndex` on the same folder fails to open until the first is closed. Run
ingestion and serving against the same folder only from one process, or give each its own.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any, cast

import numpy as np
import qdrant_edge as qe

from retrieval.index import (
    COLLAB_VECTOR,
    DEFAULT_COLLAB_DIM,
    ID_ONLY,
    LEXICAL_VECTOR,
    RRF_K,
    UPSERT_BATCH_SIZE,
    VECTOR_NAME,
    FusedSearch,
    Hit,
    IndexConfigError,
    IndexUnavailable,
    ItemFilter,
    Lexical,
    Match,
    PointVectors,
    Source,
    check_batch,
    check_query,
    check_using,
    check_vectors,
    dims,
    item_payload,
    named_vector,
    point_id,
    point_vectors,
    to_hit,
)
from store.schemas import Item

log = logging.getLogger("attune.retrieval")

SCROLL_BATCH = 10_000  # points per scroll page when the item ids are read at open
SEARCH_THREADS = 1
"""Threads Qdrant Edge searches one request with. With its default (a pool sized by the core
count) it hands each query to pool threads while the caller waits, holding the GIL; with one,
the calling thread searches itself. `bench/edge_threads.py` (2 cores, fused two-prefetch
queries with a filter, as a decision sends): p50 0.80x and CPU per query 0.60x at 1k items,
p50 0.96x, p95 0.86x and CPU 0.86x at 100k optimized items. Requests already run side by side;
a query's own parallelism only adds hand-offs."""
STORED_POINTS_KEPT = 4096
"""How many items' payloads and dense vectors an `EdgeIndex` keeps in memory once read (a few
kilobytes each at 384 dimensions)."""
MATCHES_KEPT = 256
"""How many answers of a match asked alone (a text's keywords and embedding, no person's signal)
an `EdgeIndex` keeps until its next write (`EdgeIndex.fused_searches`): each is a ranking of ids
and scores, a few kilobytes. A shop's requests repeat a few texts often (the head of its
queries), and each text's feedback round (`retrieval.hybrid.refined_match`) is the same for
everyone under the same constraints: a repeat under the same filter costs Qdrant nothing (the
service re-orders a match by the person's signals from its answer, `tools.retrieve._reordered`).
What is kept is keyed by the (already pseudonymized) text, its vectors and the catalog
constraints (stock, an age limit), never by anything of one person's history (`_match_key`)."""

COLLAB_FULL_SCAN_KB = 100
"""The collaborative vector's `full_scan_threshold` (kilobytes of vectors; 100 KB is 400 of its
64-dimensional vectors), where Qdrant's default is 10,000: below it Qdrant prefers a full scan to
the HNSW graph. Only items someone interacted with have a collaborative vector (12,338 of the
100k items of `bench/growth.py`'s largest catalog), and under the default a search of that
vector with a filter, as every decision's is (stock, an age limit), was planned as a full scan
over the filter's points, nearly all of them without the vector: 2.1-2.8 ms per search, as much
as `exact=True`, against 0.3 ms without the filter. With this threshold and the segments rebuilt
(`optimize`), 0.2-0.3 ms, and 191 of the 200 ids an exact search returns (measured on that
catalog's shard, session 19). A segment too small to have a graph (the demo's 1,204 items) is
scanned as before. The content vector keeps the default: every item has one, and its filtered
searches already take the graph."""

GRAPH_MARKER = "attune-graph.json"
"""A file of ours in the shard's folder: the `COLLAB_FULL_SCAN_KB` its segments were built under
(`EdgeIndex._regraph`)."""

PAYLOAD_INDEXES: dict[str, qe.PayloadSchemaType] = {
    "category": qe.PayloadSchemaType.Keyword,
    "item_id": qe.PayloadSchemaType.Keyword,
    "in_stock": qe.PayloadSchemaType.Bool,
    "min_age": qe.PayloadSchemaType.Integer,
    "price": qe.PayloadSchemaType.Float,
}


# qdrant_edge 0.9.0 reads a Python bool as the integer 1 (bool subclasses int), so
# MatchValue(True) never matches a boolean payload; numpy.bool_ reaches the bool variant. Built
# once: reading a numpy.bool_ costs qdrant_edge more than the rest of a filter.
_IN_STOCK = qe.FieldCondition(key="in_stock", match=qe.MatchValue(np.bool_(True)))  # type: ignore[arg-type]


@functools.lru_cache(maxsize=1 << 16)
def edge_point_id(item_id: str) -> int:
    """An item's point id in a Qdrant Edge shard: the first 64 bits of its UUID (`point_id`),
    an unsigned integer, as Qdrant's numeric ids are.

    qdrant_edge builds a `uuid.UUID` (in Python) at every read of a UUID point's id, and a
    decision reads a few hundred; an integer id reads as a plain int: 246 fewer Python calls
    in a decision without a query text (7,166 → 6,920, `bench/decide.py`'s `python_calls`).
    Two items share one only with odds of about n²/2⁶⁵ (3e-8 at a million items);
    `EdgeIndex.upsert` refuses an item whose id would take another's point."""
    return point_id(item_id).int >> 64


def graphed_threshold(path: Path) -> int | None:
    """The collaborative full-scan threshold the segments of the shard in `path` were last
    rebuilt under, as `GRAPH_MARKER` records it, or None when it records none (a shard from
    before the threshold, or one whose rebuild did not finish)."""
    try:
        found = json.loads((path / GRAPH_MARKER).read_text())["collab_full_scan_kb"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return found if isinstance(found, int) else None


def _mark_graphed(path: Path) -> None:
    """Records that the shard's segments hold `COLLAB_FULL_SCAN_KB` (written whole, then
    renamed into place)."""
    written = path / f".{GRAPH_MARKER}.tmp"
    written.write_text(json.dumps({"collab_full_scan_kb": COLLAB_FULL_SCAN_KB}))
    written.replace(path / GRAPH_MARKER)


def edge_filter(flt: ItemFilter | None) -> qe.Filter | None:
    """Translates an ItemFilter into a Qdrant Edge filter, or None when it constrains nothing."""
    if flt is None:
        return None
    must: list[Any] = []
    must_not: list[Any] = []
    if flt.categories:
        must.append(qe.FieldCondition(key="category", match=qe.MatchAny(list(flt.categories))))
    if flt.exclude_ids:
        # By point id: an item's point id is a function of its id (`edge_point_id`), and Qdrant
        # checks an id against a set where a keyword condition reads the payload index per point.
        must_not.append(qe.HasIdCondition({edge_point_id(item_id) for item_id in flt.exclude_ids}))
    if flt.max_min_age is not None:
        must.append(qe.FieldCondition(key="min_age", range=qe.RangeFloat(lte=flt.max_min_age)))
    if flt.in_stock_only:
        must.append(_IN_STOCK)
    if flt.max_price is not None:
        must.append(qe.FieldCondition(key="price", range=qe.RangeFloat(lte=flt.max_price)))
    if not must and not must_not:
        return None
    return qe.Filter(must=must or None, must_not=must_not or None)


def _rrf(weights: list[float]) -> Any:
    # The stubs list the outer `Fusion`; the engine takes its `Rrf` variant.
    return qe.Fusion.Rrf(k=RRF_K, weights=weights)


def _match_fusion(match: Match, weights: list[float]) -> Any:
    """The query fusing a match's sources (weights are those of its present sources)."""
    return qe.Fusion.Dbsf() if match.fusion == "dbsf" else _rrf(weights)


def _stored_hits(
    hits: list[Hit],
    stored: Mapping[str, tuple[dict[str, Any], dict[str, np.ndarray]]],
    with_payload: bool,
    with_vectors: bool,
) -> list[Hit]:
    """Hits read as ids and scores, with the payloads and vectors `_read_points` found; an item
    no longer stored (deleted since the query) is left out."""
    return [
        Hit(
            hit.item_id,
            hit.score,
            dict(entry[0]) if with_payload else hit.payload,
            dict(entry[1]) if with_vectors else {},
        )
        for hit in hits
        if (entry := stored.get(hit.item_id)) is not None
    ]


def _match_key(search: FusedSearch) -> tuple[Any, ...] | None:
    """What the answer (ids and scores) of a search for a match alone depends on: the match's
    sources (their texts, and their vectors to the bit), limit, weight and fusion, and the
    search's filter, size and prefetch. None for a search with sources of its own (a person's
    signals) or a filter that names items to leave out (a person's recent purchases): what is
    kept never depends on one person's history."""
    match = search.match
    if match is None or search.sources or (search.flt is not None and search.flt.exclude_ids):
        return None
    sources = tuple(
        (
            s.using,
            s.weight,
            s.text,
            s.threshold,
            None if s.vector is None else (s.vector.dtype.str, s.vector.shape, s.vector.tobytes()),
        )
        for s in match.sources
    )
    return (sources, match.limit, match.weight, match.fusion, search.flt, search.k, search.prefetch)


def _whole_match(searches: Sequence[FusedSearch], search: FusedSearch) -> int | None:
    """Which of `searches` (if any) asks for `search`'s match alone and in full, under the same
    filter and prefetch: its answer is the match `search` re-orders. Only for a search that
    re-orders a match by sources."""
    match = search.match
    if match is None or not search.sources:
        return None
    for n, other in enumerate(searches):
        if (
            other.match is match
            and not other.sources
            and other.k >= match.limit
            and other.flt == search.flt
            and max(other.prefetch, other.k) == max(search.prefetch, search.k)
        ):
            return n
    return None


class EdgeIndex:
    """A VectorIndex on a Qdrant Edge shard in `path`, created on first use."""

    backend = "qdrant-edge"

    def __init__(self, path: Path, dim: int, collab_dim: int = DEFAULT_COLLAB_DIM) -> None:
        self.path = Path(path)
        self.dim = dim
        self.collab_dim = collab_dim
        self._lexical = Lexical()
        config = qe.EdgeConfig(
            vectors=self._dense_config(),
            sparse_vectors={LEXICAL_VECTOR: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)},
            max_search_threads=SEARCH_THREADS,
        )
        is_new = not self.path.exists() or not any(self.path.iterdir())
        if is_new:
            self._shard = qe.EdgeShard.create(str(self.path), config)
            _mark_graphed(self.path)
        else:
            regraph = graphed_threshold(self.path) != COLLAB_FULL_SCAN_KB
            self._shard = self._load(config)
        self._closed = False
        # Item ids by point id, for hits read without payload. A point id is a function of the
        # item id (`edge_point_id`), so an entry never goes stale: a deleted item's is never
        # looked up. Read whole when the shard opens (`_all_item_ids`), which also finds the
        # points of a shard written with UUID point ids; those get their integer ids
        # (`_renumber`).
        self._item_ids: dict[int, str] = {}
        if not is_new:
            try:
                self._item_ids, legacy = self._all_item_ids()
                if legacy:
                    self._renumber(legacy)
                if regraph:
                    self._regraph()
            except BaseException:
                self._shard.close()  # the folder's lock with it; the next open tries again
                raise
        # Payloads and dense vectors by item id, as the shard returned them (`_read_points`).
        # Only this process writes the shard (it holds the folder's lock), and every write
        # forgets the items it touches, so an entry is what a read would return. A read that
        # raced a write keeps its answer out: `_generation` counts the writes.
        self._points: dict[str, tuple[dict[str, Any], dict[str, np.ndarray]]] = {}
        # Answers (ids and scores) of matches asked alone, by `_match_key`, each with the
        # generation it was read at: any write makes every one stale.
        self._matches: dict[tuple[Any, ...], tuple[int, list[Hit]]] = {}
        self._generation = 0
        self._points_lock = threading.Lock()
        self._ensure_payload_indexes()

    def _all_item_ids(self) -> tuple[dict[int, str], list[uuid.UUID]]:
        """Every stored point's item id, by point id, in one scroll; and the points stored under
        a UUID, as shards written before integer point ids hold them (`_renumber`).

        Filled as hits came in, the map missed most of a large catalog's ids for a long time,
        and each id missed costs a payload read in the query's answer: at 100k items that was a
        quarter of a decision's CPU (`bench/growth.py`'s items axis). One scroll at open costs
        about 10 µs per point (1 s of CPU at 100k items), once."""
        found: dict[int, str] = {}
        legacy: list[uuid.UUID] = []
        offset: qe.PointId | None = None
        while True:
            request = qe.ScrollRequest(
                offset=offset, limit=SCROLL_BATCH, with_payload=ID_ONLY, with_vector=False
            )
            records, offset = self._shard.scroll(request)
            for record in records:
                if isinstance(record.id, int):
                    if record.payload is not None:
                        found[record.id] = record.payload["item_id"]
                else:
                    legacy.append(uuid.UUID(str(record.id)))
            if offset is None:
                return found, legacy

    def _renumber(self, legacy: list[uuid.UUID]) -> None:
        """Moves points stored under a UUID (shards written before integer point ids) to their
        integer ids (`edge_point_id`), payloads and every named vector as they were: written
        under the new id first, then deleted under the old, a batch at a time, so a run cut
        short leaves each item under one id or both, and the next open finishes the move."""
        log.warning(
            "the Qdrant Edge shard in %s stores %d points under UUIDs: moving them to integer "
            "point ids (once)",
            self.path,
            len(legacy),
        )
        for start in range(0, len(legacy), UPSERT_BATCH_SIZE):
            batch: list[qe.PointId] = list(legacy[start : start + UPSERT_BATCH_SIZE])
            records = self._shard.retrieve(batch, with_payload=True, with_vector=True)
            moved = [(r.payload["item_id"], r) for r in records if r.payload is not None]
            self._check_distinct_points([item_id for item_id, _ in moved])
            points = []
            for item_id, record in moved:
                point = edge_point_id(item_id)
                points.append(qe.Point(point, record.vector or {}, record.payload))
                self._item_ids[point] = item_id
            if points:
                self._shard.update(qe.UpdateOperation.upsert_points(points))
            self._shard.update(qe.UpdateOperation.delete_points(batch))
        self._shard.flush()

    def _regraph(self) -> None:
        """Segments built under another collaborative full-scan threshold keep it until they are
        rebuilt, although the shard stores the new one as soon as it is opened with it: they
        are rebuilt at this open (seconds at 100k items; nothing to do for segments too small
        to have a graph), and `GRAPH_MARKER` records it once done, so that a rebuild cut short
        is run again at the next open."""
        started = time.monotonic()
        if self._shard.optimize():
            log.warning(
                "the Qdrant Edge shard in %s was built with another full-scan threshold for "
                "its %r vector: its segments were rebuilt in %.1f s (once)",
                self.path,
                COLLAB_VECTOR,
                time.monotonic() - started,
            )
        _mark_graphed(self.path)

    def _dense_config(self) -> dict[str, qe.EdgeVectorParams]:
        return {
            VECTOR_NAME: qe.EdgeVectorParams(size=self.dim, distance=qe.Distance.Cosine),
            COLLAB_VECTOR: qe.EdgeVectorParams(
                size=self.collab_dim,
                distance=qe.Distance.Dot,
                # Qdrant's defaults for the graph itself (m 16, ef_construct 100).
                hnsw_config=qe.HnswIndexConfig(
                    m=16, ef_construct=100, full_scan_threshold=COLLAB_FULL_SCAN_KB
                ),
            ),
        }

    def _load(self, config: qe.EdgeConfig) -> qe.EdgeShard:
        try:
            # Giving the config makes Qdrant Edge check it against the stored segments.
            return qe.EdgeShard.load(str(self.path), config)
        # qdrant_edge raises plain Exception for every failure; only a config mismatch is
        # translated, anything else (e.g. the folder is open in another process) propagates.
        except Exception as err:
            if "incompatible" not in str(err):
                raise
            if LEXICAL_VECTOR in str(err):
                return self._add_lexical_vector()
            raise IndexConfigError(
                f"the Qdrant Edge shard in {self.path} does not hold {self.dim}-dimensional "
                f"{VECTOR_NAME!r} and {self.collab_dim}-dimensional {COLLAB_VECTOR!r} vectors "
                f"({err}). A shard keeps the vectors it was created "
                "with: point the index at a new folder, or delete this one and re-ingest, "
                "after changing the embedder."
            ) from err

    def _add_lexical_vector(self) -> qe.EdgeShard:
        """A shard written before keyword search gets its (empty) lexical vector; items are
        found by keywords once they are ingested again."""
        shard = qe.EdgeShard.load(str(self.path), qe.EdgeConfig(vectors=self._dense_config()))
        shard.update(qe.UpdateOperation.create_sparse_vector(LEXICAL_VECTOR, qe.Modifier.Idf))
        shard.flush()
        log.warning(
            "the Qdrant Edge shard in %s had no %r vector: added; re-ingest the catalog so "
            "that keyword search finds its items",
            self.path,
            LEXICAL_VECTOR,
        )
        return shard

    def _ensure_payload_indexes(self) -> None:
        existing = self._shard.info().payload_schema
        for field_name, schema in PAYLOAD_INDEXES.items():
            if field_name not in existing:
                self._shard.update(qe.UpdateOperation.create_field_index(field_name, schema))
        self._shard.flush()

    def upsert(self, items: Sequence[Item], vectors: np.ndarray) -> None:
        """Write the items, or none of them: a failed write (a full disk, say) puts back the
        points as they were and raises `IndexUnavailable`."""
        array = check_batch(items, vectors, self.dim)
        ids: list[qe.PointId] = [edge_point_id(item.item_id) for item in items]
        self._check_distinct_points([item.item_id for item in items])
        before = self._shard.retrieve(ids, with_payload=True, with_vector=True)
        # qdrant_edge raises plain Exception for every failure: any of them is the index's.
        try:
            self._upsert(items, array)
        except Exception as err:
            try:
                stored = {str(record.id) for record in before}
                fresh: list[qe.PointId] = [i for i in ids if str(i) not in stored]
                if fresh:
                    self._shard.update(qe.UpdateOperation.delete_points(fresh))
                if before:
                    points = [qe.Point(r.id, r.vector or {}, r.payload) for r in before]
                    self._shard.update(qe.UpdateOperation.upsert_points(points))
                self._shard.flush()
            except Exception as undo:
                raise IndexUnavailable(
                    f"the Qdrant Edge write failed ({type(err).__name__}) and so did putting "
                    f"the points back ({type(undo).__name__}): rebuild the index from the store"
                ) from err
            raise IndexUnavailable(
                f"the Qdrant Edge write failed ({type(err).__name__}); nothing was written"
            ) from err
        finally:
            self._forget([item.item_id for item in items])

    def _check_distinct_points(self, item_ids: Sequence[str]) -> None:
        """Refuses a batch in which an item would take the point of another, stored or in the
        batch (two item ids whose `edge_point_id`s agree: odds of about n²/2⁶⁵)."""
        claimed: dict[int, str] = {}
        for item_id in item_ids:
            point = edge_point_id(item_id)
            other = claimed.setdefault(point, self._item_ids.get(point, item_id))
            if other != item_id:
                raise ValueError(
                    f"items {other!r} and {item_id!r} map to one Qdrant Edge point id "
                    f"({point}); rename one of them"
                )

    def _upsert(self, items: Sequence[Item], array: np.ndarray) -> None:
        for start in range(0, len(items), UPSERT_BATCH_SIZE):
            batch = items[start : start + UPSERT_BATCH_SIZE]
            # An upsert replaces the whole point: carry over the collab vectors already stored.
            collab = self.vectors([item.item_id for item in batch], using=COLLAB_VECTOR)
            points = []
            for item, row in zip(batch, array[start : start + UPSERT_BATCH_SIZE], strict=True):
                named: dict[str, Any] = {
                    VECTOR_NAME: row.tolist(),
                    LEXICAL_VECTOR: qe.SparseVector(*self._lexical.document(item)),
                }
                if item.item_id in collab:
                    named[COLLAB_VECTOR] = collab[item.item_id].tolist()
                points.append(qe.Point(edge_point_id(item.item_id), named, item_payload(item)))
                self._item_ids[edge_point_id(item.item_id)] = item.item_id
            self._shard.update(qe.UpdateOperation.upsert_points(points))
            self._forget([item.item_id for item in batch])
        self._shard.flush()

    def set_vectors(self, using: str, vectors: Mapping[str, np.ndarray]) -> int:
        dim = dims(self.dim, self.collab_dim)[check_using(using)]
        rows = check_vectors(vectors, dim)
        stored = self._stored(list(rows))
        ids = [item_id for item_id in rows if item_id in stored]
        for start in range(0, len(ids), UPSERT_BATCH_SIZE):
            update = [
                qe.PointVectors(edge_point_id(item_id), {using: rows[item_id]})
                for item_id in ids[start : start + UPSERT_BATCH_SIZE]
            ]
            self._shard.update(qe.UpdateOperation.update_vectors(update))
            self._forget(ids[start : start + UPSERT_BATCH_SIZE])
        self._shard.flush()
        return len(ids)

    def _stored(self, item_ids: Sequence[str]) -> set[str]:
        by_point = {edge_point_id(item_id): item_id for item_id in item_ids}
        records = self._shard.retrieve(list(by_point), with_payload=False, with_vector=False)
        return {by_point[cast(int, record.id)] for record in records}

    def delete(self, item_ids: Sequence[str]) -> None:
        if not item_ids:
            return
        ids: list[qe.PointId] = [edge_point_id(item_id) for item_id in item_ids]
        self._shard.update(qe.UpdateOperation.delete_points(ids))
        self._forget(item_ids)
        self._shard.flush()

    def _forget(self, item_ids: Sequence[str]) -> None:
        """Drops the items' kept payloads and vectors after a write (see `__init__`)."""
        with self._points_lock:
            self._generation += 1
            for item_id in item_ids:
                self._points.pop(item_id, None)

    def search(
        self,
        vector: np.ndarray,
        *,
        k: int,
        flt: ItemFilter | None = None,
        with_vectors: bool = False,
        using: str = VECTOR_NAME,
        with_payload: bool = True,
    ) -> list[Hit]:
        dim = dims(self.dim, self.collab_dim)[check_using(using)]
        request = qe.QueryRequest(
            limit=k,
            query=qe.Query.Nearest(check_query(vector, dim, k), using=using),
            filter=edge_filter(flt),
            with_payload=with_payload,
            with_vector=[VECTOR_NAME, COLLAB_VECTOR] if with_vectors else False,
        )
        return self._hits(self._shard.query(request), with_vectors, with_payload)

    def _prefetch(self, source: Source, limit: int, where: qe.Filter | None) -> qe.Prefetch | None:
        """One source as a prefetch, or None for a text with no searchable word."""
        if source.using == LEXICAL_VECTOR:
            assert source.text is not None  # checked by Source
            indices, values = self._lexical.query(source.text)
            if not indices:
                return None
            vector: Any = qe.SparseVector(indices, values)
        else:
            size = dims(self.dim, self.collab_dim)[source.using]
            vector = check_query(source.dense, size, limit)
        return qe.Prefetch(
            limit=limit,
            query=qe.Query.Nearest(vector, using=source.using),
            filter=where,
            score_threshold=source.threshold,
        )

    def _rescore(self, source: Source, inner: qe.Prefetch, limit: int) -> qe.Prefetch:
        """The items of `inner`, scored by a dense source instead."""
        size = dims(self.dim, self.collab_dim)[source.using]
        query = qe.Query.Nearest(check_query(source.dense, size, limit), using=source.using)
        return qe.Prefetch(limit=limit, query=query, prefetches=[inner])

    def fused_search(
        self,
        sources: Sequence[Source],
        *,
        k: int,
        flt: ItemFilter | None = None,
        prefetch: int = 100,
        with_vectors: bool = False,
        match: Match | None = None,
        with_payload: bool = True,
    ) -> list[Hit]:
        search = FusedSearch(tuple(sources), k, flt, prefetch, with_vectors, match, with_payload)
        request = self._fused_request(search)
        if request is None:
            return []
        return self._hits(self._shard.query(request), with_vectors, with_payload)

    def fused_searches(self, searches: Sequence[FusedSearch]) -> list[list[Hit]]:
        """Each search is asked for ids and scores only: Qdrant Edge reading a point's payload
        costs several times the query, and its vectors come as lists of Python floats. The
        payloads and vectors a search wants are then those kept from earlier reads
        (`_read_points`), the shard read once for the items not kept.

        A search that re-orders a match by the person's signals has Qdrant run the match once
        for the match order and once more under each signal's re-scoring. When the batch also
        asks for that match alone and in full, its answer names the matched items: each signal
        then re-scores just those (`_rescored`), in a second batch. (The service itself asks for
        the match alone and re-orders it from the answer, `tools.retrieve._reordered`; this stays
        the index's answer to such a search, which the contract suite holds both to.)

        The answer of a match asked alone is kept until the next write (`MATCHES_KEPT`): the
        same match under the same filter, size and prefetch (`_match_key`) is answered from it."""
        bare = [
            replace(search, with_payload=False, with_vectors=False)
            if search.with_payload or search.with_vectors
            else search
            for search in searches
        ]
        keys = [_match_key(search) for search in bare]
        generation = self._generation
        found: list[list[Hit]] = [[] for _ in searches]
        requests: list[Any] = []
        for n, (search, key) in enumerate(zip(bare, keys, strict=True)):
            kept = self._matches.get(key) if key is not None else None
            if kept is not None and kept[0] == generation:
                found[n] = kept[1]
                requests.append(None)
            else:
                requests.append(self._fused_request(search))
        whole = [
            None if request is None else _whole_match(bare, search)
            for search, request in zip(bare, requests, strict=True)
        ]
        first = [
            n for n, request in enumerate(requests) if request is not None and whole[n] is None
        ]
        self._ask(found, [(n, requests[n]) for n in first])
        self._keep_matches(generation, [(key, found[n]) for n in first if (key := keys[n])])
        second = []
        for n, (search, request, partner) in enumerate(zip(bare, requests, whole, strict=True)):
            if request is not None and partner is not None and found[partner]:
                second.append((n, self._rescored(request, search, found[partner])))
        self._ask(found, second)
        wanted = [
            hit.item_id
            for search, hits in zip(searches, found, strict=True)
            if search.with_payload or search.with_vectors
            for hit in hits
        ]
        stored = self._read_points(wanted) if wanted else {}
        return [
            _stored_hits(hits, stored, search.with_payload, search.with_vectors)
            if search.with_payload or search.with_vectors
            else list(hits)  # never a kept answer's own list
            for search, hits in zip(searches, found, strict=True)
        ]

    def _keep_matches(
        self, generation: int, answers: list[tuple[tuple[Any, ...], list[Hit]]]
    ) -> None:
        """Keeps the answers of matches asked alone, unless a write came since `generation`."""
        if not answers:
            return
        kept = self._matches
        with self._points_lock:
            if generation != self._generation:
                return
            for key, hits in answers:
                kept.pop(key, None)
                while len(kept) >= MATCHES_KEPT:
                    del kept[next(iter(kept))]  # the earliest kept first
                kept[key] = (generation, hits)

    def _ask(self, found: list[list[Hit]], asked: list[tuple[int, Any]]) -> None:
        """Runs the requests in one batch; the hits (ids and scores) of the n-th go to found[n]."""
        if not asked:
            return
        answers = self._shard.query_batch(qe.QueryBatchRequest([request for _, request in asked]))
        for (n, _), points in zip(asked, answers, strict=True):
            found[n] = self._hits(points, False, False)

    def _rescored(
        self, request: qe.QueryRequest, search: FusedSearch, matched: list[Hit]
    ) -> qe.QueryRequest:
        """`request` (`_fused_request` of a match re-ordered by `search.sources`) with each
        source re-scoring the `matched` items by id instead of its own run of the match: the
        same items, scored by the same vectors. The match order itself stays the request's first
        input."""
        assert search.match is not None  # only a match's searches have a whole match
        limit = search.match.limit
        only = qe.Filter(must=[qe.HasIdCondition({edge_point_id(hit.item_id) for hit in matched})])
        sizes = dims(self.dim, self.collab_dim)
        rescores = [
            qe.Prefetch(
                limit=limit,
                query=qe.Query.Nearest(check_query(s.dense, sizes[s.using], limit), using=s.using),
                filter=only,
            )
            for s in search.sources
        ]
        return qe.QueryRequest(
            limit=request.limit,
            prefetches=[request.prefetches[0], *rescores],
            query=request.query,
            filter=request.filter,
            with_payload=False,
            with_vector=False,
        )

    def _hits(self, points: Sequence[Any], with_vectors: bool, with_payload: bool) -> list[Hit]:
        """Hits of a query's points. Without payload (Qdrant Edge reading it costs several times
        the query), each item id comes from the ids seen before, the unseen read in one call."""
        if with_payload:
            return [to_hit(point, with_vectors) for point in points]
        # Each id is read once: qdrant_edge builds a new Python object at each read of `point.id`.
        keys = [point.id for point in points]
        item_ids = self._item_ids
        found = list(map(item_ids.get, keys))
        if None in found:
            unseen: list[qe.PointId] = [key for key in keys if key not in item_ids]
            for record in self._shard.retrieve(unseen, with_payload=ID_ONLY, with_vector=False):
                if record.payload is not None:
                    item_ids[cast(int, record.id)] = record.payload["item_id"]
            found = list(map(item_ids.get, keys))
        if with_vectors:
            return [
                Hit(item_id, point.score, {"item_id": item_id}, PointVectors(point))
                for point, item_id in zip(points, found, strict=True)
                if item_id is not None
            ]
        # Ids and scores read in passes of their own: a ranking is a few hundred points.
        scores = [point.score for point in points]
        return [
            Hit(item_id, score, {"item_id": item_id}, {})
            for item_id, score in zip(found, scores, strict=True)
            if item_id is not None
        ]

    def _fused_request(self, search: FusedSearch) -> qe.QueryRequest | None:
        """The query of one fused search, or None when it can match nothing (a text without a
        searchable word).

        Without a match, the filter is given once, to the query: Qdrant merges a query's filter
        into each of its prefetches (its planner's `recurse_prefetches`), so the prefetches are
        searched filtered as before, and checked once per point where a filter given to them too
        was checked twice. A match's prefetches keep theirs as they were: a match re-ordered by
        sources answers differently from one run to the next (ties inside the match), so that
        the same holds for it could not be checked."""
        sources, k, prefetch, match = search.sources, search.k, search.prefetch, search.match
        where = edge_filter(search.flt)
        inputs: list[tuple[float, qe.Prefetch | None]]
        if match is None:
            limit = k
            inputs = [(s.weight, self._prefetch(s, max(prefetch, k), None)) for s in sources]
        else:
            matched = [
                (s.weight, stage)
                for s in match.sources
                if (stage := self._prefetch(s, max(prefetch, k), where)) is not None
            ]
            if not matched:
                return None
            limit = min(k, match.limit)
            fusion = _match_fusion(match, [w for w, _ in matched])
            if not sources:
                inputs = list(matched)
            else:
                stage = qe.Prefetch(
                    limit=match.limit,
                    prefetches=[p for _, p in matched],
                    query=fusion,
                    filter=where,
                )
                inputs = [(match.weight, stage)]
                inputs += [(s.weight, self._rescore(s, stage, match.limit)) for s in sources]
        present = [(weight, stage) for weight, stage in inputs if stage is not None]
        if not present:
            return None
        return qe.QueryRequest(
            limit=limit,
            prefetches=[stage for _, stage in present],
            query=fusion if match is not None and not sources else _rrf([w for w, _ in present]),
            filter=where,
            with_payload=search.with_payload,
            with_vector=[VECTOR_NAME, COLLAB_VECTOR] if search.with_vectors else False,
        )

    def vectors(self, item_ids: Sequence[str], using: str = VECTOR_NAME) -> dict[str, np.ndarray]:
        if not item_ids:
            return {}
        by_point = {edge_point_id(item_id): item_id for item_id in item_ids}
        records = self._shard.retrieve(
            list(by_point), with_payload=False, with_vector=[check_using(using)]
        )
        return {
            by_point[cast(int, record.id)]: named_vector(record.vector, using)
            for record in records
            if isinstance(record.vector, dict) and using in record.vector
        }

    def points(self, item_ids: Sequence[str], using: str = VECTOR_NAME) -> list[Hit]:
        check_using(using)
        stored = self._read_points(item_ids)
        return [
            Hit(item_id, 0.0, dict(found[0]), {using: found[1][using]})
            for item_id in item_ids
            if (found := stored.get(item_id)) is not None and using in found[1]
        ]

    def hits(self, item_ids: Sequence[str]) -> list[Hit]:
        stored = self._read_points(item_ids)
        return [
            Hit(item_id, 0.0, dict(found[0]), dict(found[1]))
            for item_id in item_ids
            if (found := stored.get(item_id)) is not None
        ]

    def _read_points(
        self, item_ids: Sequence[str]
    ) -> dict[str, tuple[dict[str, Any], dict[str, np.ndarray]]]:
        """The stored payload and dense vectors (read-only arrays) of each item found, read from
        the shard only for items not kept from an earlier read (`__init__`)."""
        kept = self._points
        found = {item_id: entry for item_id in item_ids if (entry := kept.get(item_id)) is not None}
        missing = [item_id for item_id in dict.fromkeys(item_ids) if item_id not in found]
        if not missing:
            return found
        generation = self._generation
        records = self._shard.retrieve(
            [edge_point_id(item_id) for item_id in missing],
            with_payload=True,
            with_vector=[VECTOR_NAME, COLLAB_VECTOR],
        )
        fresh = {}
        for record in records:
            # Qdrant Edge builds a record's vectors and payload anew at each read: read them once.
            if (payload := record.payload) is None:
                continue
            vectors = point_vectors(record.vector)
            for vector in vectors.values():
                vector.flags.writeable = False  # shared by every later hit of the item
            fresh[payload["item_id"]] = (payload, vectors)
        with self._points_lock:
            if generation == self._generation:
                while kept and len(kept) + len(fresh) > STORED_POINTS_KEPT:
                    del kept[next(iter(kept))]  # the earliest read first
                kept.update(fresh)
        found.update(fresh)
        return found

    def count(self) -> int:
        return self._shard.count(qe.CountRequest(exact=True))

    def optimize(self) -> bool:
        """Builds the vector and payload indexes; run after bulk ingest, off the request path.

        Returns True if any segment was optimized. It takes seconds at 10k points and close to
        a minute at 100k on two cores, and blocks meanwhile.
        """
        return self._shard.optimize()

    def flush(self) -> None:
        """Writes pending changes to disk; upsert and delete already do this."""
        self._shard.flush()

    def close(self) -> None:
        """Flushes and releases the shard folder, so another process may open it."""
        if self._closed:
            return
        self._shard.flush()
        self._shard.close()
        self._closed = True

    def __enter__(self) -> EdgeIndex:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
