"""The no-text ranking's cheaper steps answer as the steps they replaced: a fused query filtered
once at its root (exclusions by point id) as one filtered at every prefetch too (exclusions by
the payload's item id), and a saved item-item model's blocks (read from its mapped matrix by
`take`) as `np.ix_` read them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import qdrant_edge as qe

from retrieval.edge import EdgeIndex
from retrieval.index import COLLAB_VECTOR, VECTOR_NAME, FusedSearch, ItemFilter, Source
from retrieval.sequence import ItemItemModel, ItemItemParams
from store.schemas import Item

DIM, COLLAB_DIM, N = 32, 8, 240
WORDS = ["wool", "coffee", "boots", "kettle", "puzzle", "gin", "scarf", "beans"]


def _index(folder: Path) -> EdgeIndex:
    rng = np.random.default_rng(5)
    items = [
        Item(
            item_id=f"i{n:03d}",
            title=f"{WORDS[n % len(WORDS)]} {WORDS[(n * 3) % len(WORDS)]} {n}",
            price=10.0 + n,
            stock=int(rng.choice([0, 3, 20])),
            min_age=int(rng.choice([0, 0, 8, 12, 18])),
        )
        for n in range(N)
    ]
    index = EdgeIndex(folder, DIM, COLLAB_DIM)
    index.upsert(items, rng.normal(size=(N, DIM)).astype(np.float32))
    collab = {item.item_id: rng.normal(size=COLLAB_DIM).astype(np.float32) for item in items}
    index.set_vectors(COLLAB_VECTOR, collab)
    return index


def _as_before(request: Any, where: qe.Filter | None) -> qe.QueryRequest:
    """The request as `_fused_request` built it before: the filter on the query, on every
    source's prefetch and on every prefetch that had one, an exclusion as a keyword condition on
    the payload's item id."""

    def prefetch(p: Any) -> qe.Prefetch:
        return qe.Prefetch(
            limit=p.limit,
            query=p.query,
            prefetches=[prefetch(inner) for inner in p.prefetches],
            filter=where if not p.prefetches or p.filter is not None else None,
            score_threshold=p.score_threshold,
        )

    return qe.QueryRequest(
        limit=request.limit,
        prefetches=[prefetch(p) for p in request.prefetches],
        query=request.query,
        filter=where,
        with_payload=True,
        with_vector=False,
    )


def _payload_filter(flt: ItemFilter) -> qe.Filter:
    must: list[Any] = [qe.FieldCondition(key="in_stock", match=qe.MatchValue(np.bool_(True)))]
    if flt.max_min_age is not None:
        must.append(qe.FieldCondition(key="min_age", range=qe.RangeFloat(lte=flt.max_min_age)))
    excluded = qe.FieldCondition(key="item_id", match=qe.MatchAny(list(flt.exclude_ids)))
    return qe.Filter(must=must, must_not=[excluded])


def _answer(points: list[Any], item_id: Any) -> tuple[list[float], list[tuple[str, float]]]:
    """Scores in order, and each item with its score, leaving out the items tied at the last
    score: Qdrant Edge orders tied scores anew at each query, and may cut among them."""
    scored = [(item_id(p), p.score) for p in points]
    last = scored[-1][1] if scored else None
    return [s for _, s in scored], sorted((i, s) for i, s in scored if s != last)


def test_a_root_filter_answers_as_a_filter_on_every_prefetch(tmp_path: Path) -> None:
    index = _index(tmp_path / "shard")
    rng = np.random.default_rng(9)
    compared = 0
    for n in range(24):
        excluded = tuple(f"i{j:03d}" for j in rng.choice(N, size=int(rng.integers(1, 30))))
        flt = ItemFilter(
            exclude_ids=excluded, max_min_age=int(rng.choice([7, 12, 17, 40])), in_stock_only=True
        )
        sources = [
            Source(VECTOR_NAME, rng.normal(size=DIM), 1.0),
            Source(COLLAB_VECTOR, rng.normal(size=COLLAB_DIM), 2.0),
            Source(COLLAB_VECTOR, rng.normal(size=COLLAB_DIM), 1.0),
        ][: 2 + n % 2]
        search = FusedSearch(tuple(sources), 60, flt, 40, with_payload=False)
        request = index._fused_request(search)
        assert request is not None
        assert request.filter is not None and all(p.filter is None for p in request.prefetches)
        hits = index.fused_search(sources, k=60, flt=flt, prefetch=40, with_payload=False)
        before = index._shard.query(_as_before(request, _payload_filter(flt)))
        assert before, n
        assert _answer(hits, lambda h: h.item_id) == _answer(
            before, lambda p: p.payload["item_id"]
        ), n
        assert not {hit.item_id for hit in hits} & set(excluded)
        compared += 1
    assert compared == 24
    index.close()


def test_a_saved_models_blocks_are_read_as_np_ix_reads_them(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    items = [f"m{j}" for j in range(40)]
    sequences = {
        f"p{n}": [
            (items[int(j)], float(rng.choice([1.0, 2.0, 4.0]))) for j in rng.integers(40, size=25)
        ]
        for n in range(60)
    }
    model = ItemItemModel.fit(sequences, ItemItemParams(regularization=5.0, last=6))
    model.save(tmp_path)
    loaded = ItemItemModel.load(tmp_path)
    assert loaded is not None and isinstance(loaded.ease, np.memmap)
    for n in range(50):
        history = [
            (items[int(j)], float(rng.choice([0.0, 1.0, 8.0]))) for j in rng.integers(40, size=n)
        ]
        history.append(("unknown", 1.0))
        pool = [items[int(j)] for j in rng.permutation(40)[: 5 + n % 30]] + ["unknown"]
        inputs = loaded.inputs(history)
        ease, transitions = loaded.candidate_scores(pool, inputs)
        known = [j for j, item in enumerate(pool) if item in loaded.column]
        columns = np.array([loaded.column[pool[j]] for j in known], dtype=np.int64)
        want = np.zeros(len(pool))
        if inputs.seen.size:
            block = loaded.ease[np.ix_(inputs.seen, columns)]
            want[known] = inputs.weights.astype(np.float32) @ block
        assert ease.tobytes() == want.tobytes(), n
        for got, expected in zip(
            loaded.terms(pool, inputs), model.terms(pool, history), strict=True
        ):
            assert got.tobytes() == expected.tobytes(), n
        assert transitions.tobytes() == model.candidate_scores(pool, history)[1].tobytes()
        assert loaded.sources_of(pool, inputs) == model.sources_of(pool, history), n
