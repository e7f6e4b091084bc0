"""One contract for every VectorIndex backend: Qdrant Edge, and qdrant-client's local mode."""

from __future__ import annotations

import json
import math
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import retrieval.edge as edge_module
from retrieval.edge import EdgeIndex
from retrieval.embedder import HashingEmbedder
from retrieval.hybrid import HybridWeights, refined_match
from retrieval.index import (
    COLLAB_VECTOR,
    LEXICAL_VECTOR,
    RRF_K,
    VECTOR_NAME,
    FusedSearch,
    Hit,
    IndexConfigError,
    IndexUnavailable,
    ItemFilter,
    Lexical,
    Match,
    Source,
    VectorIndex,
    item_payload,
    point_id,
    stored_hits,
    stored_points,
)
from retrieval.server import QdrantServerIndex
from store.schemas import Item

DIM = 384
BACKENDS = ["edge", "server"]


def _item(
    item_id: str,
    title: str,
    category: str,
    price: float,
    *,
    stock: int = 10,
    min_age: int = 0,
    tags: tuple[str, ...] = (),
) -> Item:
    return Item(
        item_id=item_id,
        title=title,
        description=f"{title}, from our {category} range.",
        category=category,
        tags=list(tags),
        price=price,
        margin=0.3,
        stock=stock,
        min_age=min_age,
    )


ITEMS = [
    _item("out-01", "Red wool scarf", "outerwear", 29.0, tags=("wool", "winter")),
    _item("out-02", "Waterproof rain jacket", "outerwear", 120.0, tags=("rain",)),
    _item("out-03", "Down parka for arctic winters", "outerwear", 340.0, stock=0),
    _item("out-04", "Grey fleece hoodie", "outerwear", 45.0),
    _item("out-05", "Leather winter gloves", "outerwear", 39.0, stock=0, tags=("winter",)),
    _item("out-06", "Knitted wool beanie hat", "outerwear", 19.0, tags=("wool",)),
    _item("out-07", "Waterproof hiking trousers", "outerwear", 89.0),
    _item("out-08", "Cashmere crew neck sweater", "outerwear", 150.0, stock=2),
    _item("foot-01", "Trail running shoes", "footwear", 110.0, tags=("running",)),
    _item("foot-02", "Leather hiking boots", "footwear", 180.0, stock=0),
    _item("foot-03", "Suede leather loafers", "footwear", 95.0),
    _item("foot-04", "White canvas sneakers", "footwear", 55.0),
    _item("foot-05", "Wool lined slippers", "footwear", 25.0, tags=("wool",)),
    _item("foot-06", "Rubber wellington boots", "footwear", 35.0, stock=0),
    _item("foot-07", "Summer beach sandals", "footwear", 22.0),
    _item("foot-08", "Kids football boots", "footwear", 40.0),
    _item("kit-01", "Cast iron frying pan", "kitchen", 49.0),
    _item("kit-02", "Japanese chef knife", "kitchen", 130.0, min_age=18),
    _item("kit-03", "Stovetop espresso maker", "kitchen", 35.0),
    _item("kit-04", "Oak cutting board", "kitchen", 28.0),
    _item("kit-05", "Stand mixer with dough hook", "kitchen", 399.0, stock=0),
    _item("kit-06", "Nonstick saucepan set", "kitchen", 75.0),
    _item("kit-07", "Electric kettle", "kitchen", 39.0),
    _item("kit-08", "Pepper and spice grinder", "kitchen", 18.0, stock=0),
    _item("toy-01", "Jigsaw puzzle of a lighthouse", "toys", 15.0),
    _item("toy-02", "Wooden train set", "toys", 59.0),
    _item("toy-03", "Colourful building blocks", "toys", 25.0),
    _item("toy-04", "Plush teddy bear", "toys", 20.0, stock=0),
    _item("toy-05", "Stunt kite for the beach", "toys", 32.0, min_age=8),
    _item("toy-06", "Family strategy board game", "toys", 45.0, min_age=12),
    _item("toy-07", "Remote control racing car", "toys", 65.0, min_age=8),
    _item("toy-08", "Chemistry science kit", "toys", 38.0, min_age=12),
    _item("drink-01", "Rioja red wine", "drinks", 18.0, min_age=18),
    _item("drink-02", "Single malt whisky", "drinks", 65.0, min_age=18),
    _item("drink-03", "Craft pale ale six pack", "drinks", 14.0, min_age=18),
    _item("drink-04", "London dry gin", "drinks", 32.0, min_age=18, stock=0),
    _item("drink-05", "Sparkling apple cider", "drinks", 9.0, min_age=18),
    _item("drink-06", "Sparkling apple juice", "drinks", 4.0),
    _item("drink-07", "Cold brew coffee", "drinks", 6.0),
    _item("drink-08", "Vintage champagne", "drinks", 85.0, min_age=18),
]
BY_ID = {item.item_id: item for item in ITEMS}
EMBEDDER = HashingEmbedder(DIM)
VECTORS = EMBEDDER.embed([item.text() for item in ITEMS])
VECTOR_BY_ID = dict(zip(BY_ID, VECTORS, strict=True))

Opener = Callable[..., VectorIndex]


def _opener(backend: str, folder: Path) -> Opener:
    """Opens the backend at a fixed location, so a test can close and reopen it."""

    def open_index(dim: int = DIM) -> VectorIndex:
        if backend == "edge":
            return EdgeIndex(folder / "edge", dim=dim)
        return QdrantServerIndex(path=str(folder / "qdrant-local"), dim=dim)

    return open_index


@pytest.fixture(params=BACKENDS)
def open_index(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    return _opener(request.param, tmp_path)


@pytest.fixture
def index(open_index: Opener) -> Iterator[VectorIndex]:
    """A fresh index holding every item, for tests that change it."""
    idx = open_index()
    idx.upsert(ITEMS, VECTORS)
    yield idx
    idx.close()


@pytest.fixture(scope="module", params=BACKENDS)
def shared_index(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[VectorIndex]:
    """One loaded index per backend, shared by the read-only tests."""
    idx = _opener(request.param, tmp_path_factory.mktemp(request.param))()
    idx.upsert(ITEMS, VECTORS)
    yield idx
    idx.close()


def _matches(flt: ItemFilter, payload: dict[str, Any]) -> bool:
    """The filter's meaning, written independently of both backends."""
    return (
        (not flt.categories or payload["category"] in flt.categories)
        and payload["item_id"] not in flt.exclude_ids
        and (flt.max_min_age is None or payload["min_age"] <= flt.max_min_age)
        and (not flt.in_stock_only or payload["in_stock"])
        and (flt.max_price is None or payload["price"] <= flt.max_price)
    )


def _matching_ids(flt: ItemFilter) -> set[str]:
    return {item.item_id for item in ITEMS if _matches(flt, item_payload(item))}


def _query(item_id: str) -> np.ndarray:
    return EMBEDDER.embed([BY_ID[item_id].text()])[0]


def _expected_scores(query: np.ndarray, ids: set[str], k: int) -> list[float]:
    """The top-k cosine similarities among `ids`, by brute force."""
    return sorted((float(VECTOR_BY_ID[i] @ query) for i in ids), reverse=True)[:k]


def test_is_a_vector_index(shared_index: VectorIndex):
    assert isinstance(shared_index, VectorIndex)
    assert shared_index.dim == DIM
    assert shared_index.backend in {"qdrant-edge", "qdrant-server"}


def test_upsert_stores_every_item(shared_index: VectorIndex):
    assert shared_index.count() == len(ITEMS)


def test_upsert_is_idempotent_by_item_id(index: VectorIndex):
    changed = BY_ID["kit-01"].model_copy(update={"price": 44.0, "stock": 0})

    index.upsert(ITEMS, VECTORS)
    index.upsert([changed], VECTOR_BY_ID["kit-01"][np.newaxis, :])

    assert index.count() == len(ITEMS)
    top = index.search(_query("kit-01"), k=1)[0]
    assert top.item_id == "kit-01"
    assert top.payload["price"] == 44.0
    assert top.payload["in_stock"] is False


@pytest.mark.parametrize("item_id", ["out-01", "foot-01", "kit-03", "toy-02", "drink-02"])
def test_search_returns_the_item_itself_first(shared_index: VectorIndex, item_id: str):
    query = _query(item_id)

    hits = shared_index.search(query, k=10)

    assert hits[0].item_id == item_id
    assert hits[0].score == pytest.approx(1.0, abs=1e-4)
    scores = [hit.score for hit in hits]
    assert scores == sorted(scores, reverse=True)
    assert scores == pytest.approx(_expected_scores(query, set(BY_ID), 10), abs=1e-4)


# Each case queries with the text of an item the filter rejects, so that the unfiltered
# nearest neighbours are mostly rejected too: only a filter applied inside the query, not to
# its results afterwards, still returns k hits.
FILTER_CASES = [
    ("one category", ItemFilter(categories=("toys",)), "kit-01"),
    ("two categories", ItemFilter(categories=("toys", "kitchen")), "out-01"),
    (
        "exclude ids",
        ItemFilter(exclude_ids=tuple(i for i in BY_ID if i.startswith("out"))),
        "out-06",
    ),
    ("children only", ItemFilter(max_min_age=0), "drink-02"),
    ("twelve and under", ItemFilter(max_min_age=12), "drink-01"),
    ("in stock only", ItemFilter(in_stock_only=True), "foot-02"),
    ("cheap only", ItemFilter(max_price=30.0), "kit-05"),
    (
        "combined",
        ItemFilter(
            categories=("kitchen", "toys", "footwear"),
            exclude_ids=("toy-01", "kit-04"),
            max_min_age=12,
            in_stock_only=True,
            max_price=60.0,
        ),
        "drink-08",
    ),
]


@pytest.mark.parametrize(
    "flt, query_id", [case[1:] for case in FILTER_CASES], ids=[case[0] for case in FILTER_CASES]
)
def test_filters_are_pushed_into_the_query(
    shared_index: VectorIndex, flt: ItemFilter, query_id: str
):
    k = 5
    matching = _matching_ids(flt)
    query = _query(query_id)
    assert len(matching) >= k, "the case needs at least k matching items"
    unfiltered = shared_index.search(query, k=k)
    assert any(hit.item_id not in matching for hit in unfiltered), "the case proves nothing"

    hits = shared_index.search(query, k=k, flt=flt)

    assert len(hits) == k
    assert all(_matches(flt, hit.payload) for hit in hits)
    assert [hit.score for hit in hits] == pytest.approx(
        _expected_scores(query, matching, k), abs=1e-4
    )


def test_an_empty_filter_constrains_nothing(shared_index: VectorIndex):
    query = _query("toy-03")

    assert shared_index.search(query, k=7, flt=ItemFilter()) == shared_index.search(query, k=7)


def test_a_filter_nothing_matches_returns_no_hits(shared_index: VectorIndex):
    flt = ItemFilter(categories=("drinks",), max_min_age=0, max_price=5.0, in_stock_only=True)
    assert _matching_ids(flt) == {"drink-06"}

    hits = shared_index.search(_query("drink-06"), k=5, flt=flt)

    assert [hit.item_id for hit in hits] == ["drink-06"]
    assert shared_index.search(_query("drink-06"), k=5, flt=ItemFilter(categories=("nope",))) == []


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    categories=st.lists(st.sampled_from(["outerwear", "footwear", "kitchen", "toys", "drinks"])),
    exclude_ids=st.lists(st.sampled_from(sorted(BY_ID)), max_size=10),
    max_min_age=st.none() | st.integers(min_value=0, max_value=21),
    in_stock_only=st.booleans(),
    max_price=st.none() | st.floats(min_value=0, max_value=400, allow_nan=False),
    query_id=st.sampled_from(sorted(BY_ID)),
    k=st.integers(min_value=1, max_value=12),
)
def test_every_hit_satisfies_a_random_filter(
    shared_index: VectorIndex,
    categories: list[str],
    exclude_ids: list[str],
    max_min_age: int | None,
    in_stock_only: bool,
    max_price: float | None,
    query_id: str,
    k: int,
):
    flt = ItemFilter(
        categories=tuple(categories),
        exclude_ids=tuple(exclude_ids),
        max_min_age=max_min_age,
        in_stock_only=in_stock_only,
        max_price=max_price,
    )

    hits = shared_index.search(_query(query_id), k=k, flt=flt)

    assert all(_matches(flt, hit.payload) for hit in hits)
    assert len(hits) == min(k, len(_matching_ids(flt)))


def test_delete_removes_items(index: VectorIndex):
    gone = ["toy-02", "kit-01"]

    index.delete([*gone, "never-stored"])

    assert index.count() == len(ITEMS) - len(gone)
    assert index.vectors(gone) == {}
    for item_id in gone:
        assert item_id not in {hit.item_id for hit in index.search(_query(item_id), k=10)}


def test_vectors_returns_stored_vectors_and_skips_missing_ids(shared_index: VectorIndex):
    wanted = ["out-01", "toy-08", "drink-05"]

    stored = shared_index.vectors([*wanted, "never-stored"])

    assert set(stored) == set(wanted)
    for item_id in wanted:
        assert stored[item_id].shape == (DIM,)
        np.testing.assert_allclose(stored[item_id], VECTOR_BY_ID[item_id], atol=1e-5)
    assert shared_index.vectors([]) == {}


def test_search_returns_vectors_only_when_asked(shared_index: VectorIndex):
    query = _query("foot-03")

    with_vectors = shared_index.search(query, k=3, with_vectors=True)
    without = shared_index.search(query, k=3)

    for hit in with_vectors:
        assert hit.vector is not None
        np.testing.assert_allclose(hit.vector, VECTOR_BY_ID[hit.item_id], atol=1e-5)
    assert all(hit.vector is None for hit in without)


@pytest.mark.parametrize("item_id", ["out-03", "kit-02", "drink-04", "toy-05"])
def test_payload_round_trips(shared_index: VectorIndex, item_id: str):
    hit: Hit = shared_index.search(_query(item_id), k=1)[0]

    assert hit.item_id == item_id
    assert hit.payload == item_payload(BY_ID[item_id])
    assert isinstance(hit.payload["in_stock"], bool)
    assert isinstance(hit.payload["min_age"], int)


def test_reopening_keeps_the_points(index: VectorIndex, open_index: Opener):
    index.close()

    reopened = open_index()
    try:
        assert reopened.count() == len(ITEMS)
        assert reopened.search(_query("toy-06"), k=1)[0].item_id == "toy-06"
        # A reopened index has written none of them, and still names each hit read without
        # its payload.
        bare = reopened.search(_query("toy-06"), k=5, with_payload=False)
        assert [(h.item_id, h.payload) for h in bare] == [
            (h.item_id, {"item_id": h.item_id}) for h in reopened.search(_query("toy-06"), k=5)
        ]
    finally:
        reopened.close()


def test_reopening_with_another_dimension_fails_clearly(index: VectorIndex, open_index: Opener):
    index.close()

    with pytest.raises(IndexConfigError, match="384") as raised:
        open_index(dim=DIM // 2)
    assert "re-ingest" in str(raised.value)

    # The failed open must not have damaged or locked the stored index.
    reopened = open_index()
    assert reopened.count() == len(ITEMS)
    reopened.close()


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda idx: idx.upsert(ITEMS[:2], VECTORS[:3]), "shape"),
        (lambda idx: idx.upsert(ITEMS[:2], VECTORS[:2, :10]), "shape"),
        (lambda idx: idx.search(VECTORS[0][:10], k=3), "shape"),
        (lambda idx: idx.search(VECTORS[0], k=0), "k must be"),
    ],
    ids=["too many vectors", "wrong upsert dim", "wrong query dim", "k of zero"],
)
def test_caller_mistakes_raise_value_errors(
    shared_index: VectorIndex, call: Callable[[VectorIndex], object], message: str
):
    with pytest.raises(ValueError, match=message):
        call(shared_index)
    assert shared_index.count() == len(ITEMS)


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"categories": "toys"}, TypeError),
        ({"exclude_ids": "toy-01"}, TypeError),
        ({"max_min_age": -1}, ValueError),
        ({"max_price": -0.5}, ValueError),
        ({"max_price": float("nan")}, ValueError),
    ],
)
def test_item_filter_rejects_invalid_values(kwargs: dict[str, Any], error: type[Exception]):
    with pytest.raises(error):
        ItemFilter(**kwargs)


def test_item_filter_accepts_lists_and_stores_tuples():
    flt = ItemFilter(categories=["toys"], exclude_ids=["toy-01"])

    assert flt.categories == ("toys",)
    assert flt.exclude_ids == ("toy-01",)


@pytest.mark.filterwarnings("ignore:Failed to obtain server version:UserWarning")
def test_an_unreachable_server_is_reported_as_unavailable():
    before = set(threading.enumerate())
    # A bound socket that never listens: connecting to it is refused at once.
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        with pytest.raises(IndexUnavailable, match="could not open collection 'items'"):
            QdrantServerIndex(url=f"http://127.0.0.1:{port}", dim=DIM)
        # qdrant-client checks the server version in a background thread, which warns when it
        # fails; wait for it here so that its warning is not attributed to a later test.
        for thread in set(threading.enumerate()) - before:
            thread.join(timeout=5)


def test_a_new_collection_gets_the_cluster_shape_from_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Shards and replicas reach `create_collection` (local mode ignores them, a cluster uses
    them); without settings the server's defaults apply."""
    from qdrant_client import QdrantClient

    seen: list[dict[str, Any]] = []
    real = QdrantClient.create_collection

    def recording(self: QdrantClient, *args: Any, **kwargs: Any) -> bool:
        seen.append(kwargs)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(QdrantClient, "create_collection", recording)
    QdrantServerIndex(path=":memory:", dim=DIM, shards=6, replication_factor=2).close()
    QdrantServerIndex(path=":memory:", dim=DIM).close()
    assert [(k["shard_number"], k["replication_factor"]) for k in seen] == [(6, 2), (None, None)]


def test_serve_with_an_unreachable_qdrant_says_so_in_one_line(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    import os
    import subprocess
    import sys

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        env = {
            **os.environ,
            "ATTUNE_HOME": str(tmp_path),
            "ATTUNE_EMBEDDING_MODEL": str(tiny_model_dir),
            "ATTUNE_VECTOR_BACKEND": "qdrant",
            "ATTUNE_QDRANT_URL": f"http://127.0.0.1:{port}",
            "ATTUNE_LOG_LEVEL": "ERROR",
        }
        done = subprocess.run(
            [str(Path(sys.executable).parent / "attune"), "serve", "--no-seed"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("cannot start")]
    assert len(lines) == 1
    assert f"127.0.0.1:{port}" in lines[0] and "ATTUNE_QDRANT_URL" in lines[0]


# --- Named vectors: collaborative factors beside the content vectors, fused inside Qdrant ---

COLLAB_DIM = 64
_RNG = np.random.default_rng(11)
COLLAB = {item.item_id: _RNG.normal(size=COLLAB_DIM).astype(np.float32) for item in ITEMS[:30]}


@pytest.fixture
def hybrid_index(index: VectorIndex) -> VectorIndex:
    """Every item has a content vector; the first 30 also a collab vector (the rest are cold)."""
    assert index.set_vectors(COLLAB_VECTOR, COLLAB) == len(COLLAB)
    return index


def test_set_vectors_skips_items_not_stored(index: VectorIndex):
    assert (
        index.set_vectors(COLLAB_VECTOR, {"kit-01": COLLAB["kit-01"], "ghost": COLLAB["kit-01"]})
        == 1
    )
    assert set(index.vectors(["kit-01", "ghost", "kit-02"], using=COLLAB_VECTOR)) == {"kit-01"}
    assert index.count() == len(ITEMS)


def test_collab_search_ranks_by_dot_product(hybrid_index: VectorIndex):
    query = _RNG.normal(size=COLLAB_DIM)
    hits = hybrid_index.search(query, k=5, using=COLLAB_VECTOR)
    expected = sorted(COLLAB, key=lambda i: -float(COLLAB[i] @ query))[:5]
    assert [hit.item_id for hit in hits] == expected
    assert hits[0].score == pytest.approx(float(COLLAB[expected[0]] @ query), rel=1e-4)


def test_content_upsert_keeps_the_collab_vector(hybrid_index: VectorIndex):
    changed = BY_ID["kit-01"].model_copy(update={"price": 41.0})
    hybrid_index.upsert([changed], VECTOR_BY_ID["kit-01"][np.newaxis, :])
    kept = hybrid_index.vectors(["kit-01"], using=COLLAB_VECTOR)["kit-01"]
    np.testing.assert_allclose(kept, COLLAB["kit-01"], rtol=1e-5)


def _rrf(rankings: list[list[str]], weights: list[float]) -> dict[str, float]:
    """Qdrant's weighted reciprocal rank fusion, written independently of both backends: an item
    at 0-based position p of a source with weight w scores 1 / ((p + 1) / w + k - 1)."""
    scores: dict[str, float] = {}
    for ranking, weight in zip(rankings, weights, strict=True):
        for rank, item_id in enumerate(ranking):
            scores[item_id] = scores.get(item_id, 0.0) + 1 / ((rank + 1) / weight + RRF_K - 1)
    return scores


@pytest.mark.parametrize("weights", [(1.0, 1.0), (3.0, 1.0), (1.0, 4.0)])
def test_fused_search_is_weighted_rrf_of_the_prefetches(
    hybrid_index: VectorIndex, weights: tuple[float, float]
):
    content_q, collab_q = _query("kit-03"), _RNG.normal(size=COLLAB_DIM)
    flt = ItemFilter(in_stock_only=True, max_min_age=17)
    prefetch = 12
    by_content = [h.item_id for h in hybrid_index.search(content_q, k=prefetch, flt=flt)]
    by_collab = [
        h.item_id for h in hybrid_index.search(collab_q, k=prefetch, flt=flt, using=COLLAB_VECTOR)
    ]
    expected = _rrf([by_content, by_collab], list(weights))

    hits = hybrid_index.fused_search(
        [Source(VECTOR_NAME, content_q, weights[0]), Source(COLLAB_VECTOR, collab_q, weights[1])],
        k=8,
        flt=flt,
        prefetch=prefetch,
    )

    assert len(hits) == 8
    assert all(_matches(flt, hit.payload) for hit in hits)
    for hit in hits:
        assert hit.score == pytest.approx(expected[hit.item_id], rel=1e-3)
    best = sorted(expected.values(), reverse=True)[:8]
    assert [hit.score for hit in hits] == pytest.approx(best, rel=1e-3)


def test_a_cold_item_is_found_by_its_content_vector(hybrid_index: VectorIndex):
    cold = ITEMS[-1].item_id  # past the first 30: no collab vector
    assert cold not in COLLAB
    hits = hybrid_index.fused_search(
        [Source(VECTOR_NAME, _query(cold)), Source(COLLAB_VECTOR, _RNG.normal(size=COLLAB_DIM))],
        k=6,
        prefetch=3,
    )
    assert cold in [hit.item_id for hit in hits]


def test_fused_search_returns_both_named_vectors(hybrid_index: VectorIndex):
    hit = hybrid_index.fused_search(
        [Source(VECTOR_NAME, _query("kit-01"))], k=1, with_vectors=True
    )[0]
    assert hit.item_id == "kit-01"
    np.testing.assert_allclose(hit.vectors[COLLAB_VECTOR], COLLAB["kit-01"], rtol=1e-5)
    np.testing.assert_allclose(hit.vector, VECTOR_BY_ID["kit-01"], atol=1e-5)


def test_named_vector_mistakes_raise_value_errors(hybrid_index: VectorIndex):
    with pytest.raises(ValueError, match="using"):
        hybrid_index.search(np.ones(DIM), k=1, using="nope")
    with pytest.raises(ValueError, match="shape"):
        hybrid_index.search(np.ones(DIM), k=1, using=COLLAB_VECTOR)
    with pytest.raises(ValueError, match="finite"):
        hybrid_index.set_vectors(COLLAB_VECTOR, {"kit-01": np.ones(3)})
    with pytest.raises(ValueError, match="at least one source"):
        hybrid_index.fused_search([], k=1)
    with pytest.raises(ValueError, match="weight"):
        Source(VECTOR_NAME, np.ones(DIM), weight=0)


LEXICAL = Lexical()
DOC_TERMS = {item.item_id: dict(zip(*LEXICAL.document(item), strict=True)) for item in ITEMS}


def _bm25(text: str, ids: set[str] | None = None) -> dict[str, float]:
    """Qdrant's sparse IDF scoring, written independently of both backends: the sum over the
    query's terms of the item's BM25 term weight times ln(1 + (N - n + 0.5) / (n + 0.5)), N the
    items in the collection, n those holding the term. Items holding no query term are absent."""
    terms, _ = LEXICAL.query(text)
    total = len(DOC_TERMS)
    scores: dict[str, float] = {}
    for term in terms:
        holders = [i for i, doc in DOC_TERMS.items() if term in doc]
        idf = math.log((total - len(holders) + 0.5) / (len(holders) + 0.5) + 1)
        for item_id in holders:
            if ids is None or item_id in ids:
                scores[item_id] = scores.get(item_id, 0.0) + DOC_TERMS[item_id][term] * idf
    return scores


@pytest.mark.parametrize(
    "text", ["wool", "winter wool gloves", "sparkling apple", "Waterproof JACKETS", "boots"]
)
def test_lexical_search_is_bm25_with_idf(shared_index: VectorIndex, text: str):
    expected = _bm25(text)

    hits = shared_index.fused_search([Source.lexical(text)], k=len(ITEMS))

    assert {hit.item_id for hit in hits} == set(expected)
    ranked = sorted(expected, key=lambda i: -expected[i])
    # Fused scores are RRF scores: the order is BM25's (ties may come in either order).
    got = [expected[hit.item_id] for hit in hits]
    assert got == pytest.approx([expected[i] for i in ranked], rel=1e-3)


def test_lexical_search_pushes_filters_down(shared_index: VectorIndex):
    flt = ItemFilter(in_stock_only=True)
    hits = shared_index.fused_search([Source.lexical("winter wool boots")], k=20, flt=flt)
    assert hits and all(_matches(flt, hit.payload) for hit in hits)
    assert {hit.item_id for hit in hits} == set(_bm25("winter wool boots", _matching_ids(flt)))


def test_a_text_without_searchable_words_finds_nothing_lexically(shared_index: VectorIndex):
    assert shared_index.fused_search([Source.lexical("the and of")], k=5) == []
    match = Match((Source.lexical("for the"),))
    assert shared_index.fused_search([], k=5, match=match) == []


@pytest.mark.parametrize("weights", [(1.0, 1.0), (2.0, 1.0)])
def test_lexical_and_dense_fuse_in_one_query(
    shared_index: VectorIndex, weights: tuple[float, float]
):
    text = "waterproof winter boots"
    dense = EMBEDDER.embed([text])[0]
    prefetch = 10
    # The backend's own BM25 order (checked against BM25 above) settles ties between items.
    lexical = shared_index.fused_search([Source.lexical(text)], k=prefetch)
    by_lexical = [h.item_id for h in lexical]
    by_dense = [h.item_id for h in shared_index.search(dense, k=prefetch)]
    expected = _rrf([by_lexical, by_dense], list(weights))

    hits = shared_index.fused_search(
        [Source.lexical(text, weights[0]), Source(VECTOR_NAME, dense, weights[1])],
        k=6,
        prefetch=prefetch,
    )

    assert [hit.score for hit in hits] == pytest.approx(
        sorted(expected.values(), reverse=True)[:6], rel=1e-3
    )
    for hit in hits:
        assert hit.score == pytest.approx(expected[hit.item_id], rel=1e-3)


def _dbsf(scored: list[dict[str, float]]) -> dict[str, float]:
    """Distribution-based score fusion, written independently of both backends: each source's
    scores over its prefetch are mapped by mean ± 3 (sample) standard deviations to [0, 1] and
    summed; an item a source did not prefetch gets nothing from it."""
    fused: dict[str, float] = {}
    for scores in scored:
        values = np.array(list(scores.values()))
        mean, spread = values.mean(), 3 * values.std(ddof=1)
        for item_id, value in scores.items():
            norm = (value - mean + spread) / (2 * spread)
            fused[item_id] = fused.get(item_id, 0.0) + norm
    return fused


def test_a_dbsf_match_fuses_bm25_and_cosine_scores(shared_index: VectorIndex):
    text = "waterproof winter boots"
    dense = EMBEDDER.embed([text])[0]
    prefetch = 10
    bm25 = _bm25(text)
    by_lexical = dict(sorted(bm25.items(), key=lambda kv: -kv[1])[:prefetch])
    cosine = {i: float(v @ dense) / float(np.linalg.norm(dense)) for i, v in VECTOR_BY_ID.items()}
    by_dense = dict(sorted(cosine.items(), key=lambda kv: -kv[1])[:prefetch])
    expected = _dbsf([by_lexical, by_dense])
    assert len(bm25) > 2  # enough keyword hits for a spread

    match = Match((Source.lexical(text), Source(VECTOR_NAME, dense)), limit=6, fusion="dbsf")
    hits = shared_index.fused_search([], k=6, prefetch=prefetch, match=match)

    assert [hit.score for hit in hits] == pytest.approx(
        sorted(expected.values(), reverse=True)[:6], rel=1e-3
    )
    for hit in hits:
        assert hit.score == pytest.approx(expected[hit.item_id], rel=1e-3)


def test_a_refined_match_is_dbsf_with_the_embedding_moved_towards_its_best_matches(
    shared_index: VectorIndex,
):
    """The served text match (pseudo-relevance feedback, then DBSF of BM25 and cosine), computed
    independently of both backends."""
    text = "waterproof winter boots"
    dense = EMBEDDER.embed([text])[0]
    weights = HybridWeights(prefetch=10, min_similarity=0.0, feedback=1.0, feedback_items=3)
    bm25 = _bm25(text)
    by_lexical = dict(sorted(bm25.items(), key=lambda kv: -kv[1])[:10])

    def fused(query: np.ndarray) -> dict[str, float]:
        cosine = {
            i: float(v @ query) / float(np.linalg.norm(query)) for i, v in VECTOR_BY_ID.items()
        }
        close = {i: c for i, c in cosine.items() if c >= weights.min_similarity}
        return _dbsf([by_lexical, dict(sorted(close.items(), key=lambda kv: -kv[1])[:10])])

    first = fused(dense)
    best = sorted(first, key=lambda i: -first[i])[:3]
    centroid = np.mean([VECTOR_BY_ID[i] for i in best], axis=0)
    moved = dense / np.linalg.norm(dense) + centroid / np.linalg.norm(centroid)
    expected = fused(moved)

    match = refined_match(shared_index, weights, text, dense, None)
    hits = shared_index.fused_search([], k=6, prefetch=10, match=match)
    # The feedback round reads the catalog, not one person's exclusions: leaving out the best
    # matches (a person's recent purchases) moves the embedding just the same.
    leaving_out = refined_match(
        shared_index, weights, text, dense, ItemFilter(exclude_ids=tuple(best))
    )

    assert match.sources[1].dense == pytest.approx(moved / np.linalg.norm(moved), abs=1e-5)
    assert leaving_out.sources[1].dense == pytest.approx(match.sources[1].dense, abs=1e-6)
    assert [hit.score for hit in hits] == pytest.approx(
        sorted(expected.values(), reverse=True)[:6], rel=1e-3
    )
    for hit in hits:
        assert hit.score == pytest.approx(expected[hit.item_id], rel=1e-3)


def test_a_dbsf_match_rejects_weights_it_would_ignore():
    with pytest.raises(ValueError, match="unweighted"):
        Match((Source.lexical("wool", 2.0),), fusion="dbsf")
    with pytest.raises(ValueError, match="fusion"):
        Match((Source.lexical("wool"),), fusion="sum")


def test_a_dense_threshold_keeps_only_close_items(shared_index: VectorIndex):
    query = _query("kit-03")
    threshold = 0.3
    hits = shared_index.fused_search(
        [Source(VECTOR_NAME, query, threshold=threshold)], k=len(ITEMS), prefetch=len(ITEMS)
    )
    expected = {i for i, v in VECTOR_BY_ID.items() if float(v @ query) >= threshold}
    assert expected and len(expected) < len(ITEMS)
    assert {hit.item_id for hit in hits} == expected


def test_a_match_limits_results_to_the_matched_items(hybrid_index: VectorIndex):
    """Other sources re-order what the text matched; they add nothing it did not match."""
    text = "wool winter"
    match = Match((Source.lexical(text),), limit=50, weight=2.0)
    taste = _query("kit-01")  # a kitchen taste: close to nothing the text matches
    collab = _RNG.normal(size=COLLAB_DIM)
    matched = [h.item_id for h in hybrid_index.fused_search([Source.lexical(text)], k=50)]
    assert set(matched) == set(_bm25(text))
    by_taste = sorted(matched, key=lambda i: -float(VECTOR_BY_ID[i] @ taste))
    with_collab = [i for i in matched if i in COLLAB]
    by_collab = sorted(with_collab, key=lambda i: -float(COLLAB[i] @ collab))
    expected = _rrf([matched, by_taste, by_collab], [2.0, 1.0, 1.5])

    hits = hybrid_index.fused_search(
        [Source(VECTOR_NAME, taste, 1.0), Source(COLLAB_VECTOR, collab, 1.5)],
        k=10,
        match=match,
    )

    assert {hit.item_id for hit in hits} == set(matched)
    for hit in hits:
        assert hit.score == pytest.approx(expected[hit.item_id], rel=1e-3)


@pytest.mark.parametrize("threshold", [-1.0, 0.3])
@pytest.mark.parametrize(
    "text, near", [("wool winter", "kit-01"), ("sparkling apple", "drink-02"), ("boots", "out-06")]
)
def test_a_match_reordered_from_its_answer_is_the_index_answer(
    hybrid_index: VectorIndex, text: str, near: str, threshold: float
):
    """`tools.retrieve` re-orders a match by the person's signals from the match's own answer
    (`_reordered`) instead of asking the index to: for matches of keywords and meaning (every
    item by meaning, filling the match's limit, or only the close ones, short of it), with the
    signals on both named vectors (items without a collab vector are in no collab order), at
    random weights, its answer is the index's: the same items at the same scores."""
    from tools.retrieve import _match_terms, _reordered

    rng = np.random.default_rng(len(text))
    flt = ItemFilter(in_stock_only=True)
    for _ in range(8):
        meaning = Source(VECTOR_NAME, EMBEDDER.embed([text])[0], threshold=threshold)
        match = Match((Source.lexical(text), meaning), 12, float(rng.uniform(0.5, 3)), "dbsf")
        factor = rng.normal(size=COLLAB_DIM)
        sources = {
            "taste": Source(VECTOR_NAME, _query(near) + rng.normal(size=DIM) * 0.1, 1.0),
            "collab": Source(COLLAB_VECTOR, factor, float(rng.uniform(0.5, 3))),
            "recent": Source(
                COLLAB_VECTOR, rng.normal(size=COLLAB_DIM), float(rng.uniform(0.5, 3))
            ),
        }
        [matched] = hybrid_index.fused_searches(
            [FusedSearch((), 12, flt, 20, with_vectors=True, match=match)]
        )
        asked = hybrid_index.fused_search(
            list(sources.values()), k=8, flt=flt, prefetch=20, match=match
        )

        got = _reordered(matched, _match_terms(matched, match, sources), 8)

        assert len(matched) == 12 if threshold < 0 else 0 < len(matched) < 12
        assert len(got) == len(asked) == min(8, len(matched))
        expected = {hit.item_id: hit.score for hit in asked}
        assert {hit.item_id: hit.score for hit in got} == pytest.approx(expected, rel=1e-5)
        scores = [hit.score for hit in got]
        assert scores == sorted(scores, reverse=True)


def test_a_match_alone_is_the_fused_query_order(shared_index: VectorIndex):
    text = "sparkling apple"
    dense = EMBEDDER.embed([text])[0]
    sources = (Source.lexical(text, 2.0), Source(VECTOR_NAME, dense, 1.0))
    plain = shared_index.fused_search(list(sources), k=5)
    matched = shared_index.fused_search([], k=5, match=Match(sources, limit=3))
    assert [h.item_id for h in matched] == [h.item_id for h in plain][:3]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"using": LEXICAL_VECTOR, "vector": np.ones(DIM)}, "text"),
        ({"using": LEXICAL_VECTOR}, "text"),
        ({"using": VECTOR_NAME, "text": "wool"}, "vector"),
    ],
)
def test_source_mistakes_raise_value_errors(kwargs: dict[str, Any], message: str):
    with pytest.raises(ValueError, match=message):
        Source(**kwargs)


def test_an_edge_shard_from_before_keyword_search_gains_the_lexical_vector(tmp_path: Path):
    import qdrant_edge as qe

    folder = tmp_path / "old"
    config = qe.EdgeConfig(
        vectors={
            VECTOR_NAME: qe.EdgeVectorParams(size=DIM, distance=qe.Distance.Cosine),
            COLLAB_VECTOR: qe.EdgeVectorParams(size=64, distance=qe.Distance.Dot),
        }
    )
    qe.EdgeShard.create(str(folder), config).close()

    with EdgeIndex(folder, dim=DIM) as index:
        index.upsert(ITEMS, VECTORS)
        hits = index.fused_search([Source.lexical("espresso")], k=3)
    assert [hit.item_id for hit in hits] == ["kit-03"]


def test_fused_searches_answer_as_one_fused_search_each(hybrid_index: VectorIndex):
    """One batch call: each answer is the fused search's own (a search that can match nothing
    answers [] in its place), vectors included."""
    text = "wool winter"
    match = Match((Source.lexical(text), Source(VECTOR_NAME, _query("out-01"))), fusion="dbsf")
    taste = Source(VECTOR_NAME, _query("kit-01"))
    collab = Source(COLLAB_VECTOR, _RNG.normal(size=COLLAB_DIM), 1.5)
    searches = [
        FusedSearch((), 20, with_vectors=True, match=match),
        FusedSearch((taste, collab), 10, ItemFilter(in_stock_only=True), with_vectors=True),
        FusedSearch((), 5, match=Match((Source.lexical("for the"),))),
        FusedSearch((taste,), 8, ItemFilter(max_min_age=12), prefetch=20, match=match),
    ]

    answers = hybrid_index.fused_searches(searches)

    assert len(answers) == len(searches) and answers[2] == [] and answers[0] and answers[3]
    for search, hits in zip(searches, answers, strict=True):
        alone = hybrid_index.fused_search(
            list(search.sources),
            k=search.k,
            flt=search.flt,
            prefetch=search.prefetch,
            with_vectors=search.with_vectors,
            match=search.match,
        )
        assert [(h.item_id, h.payload) for h in hits] == [(h.item_id, h.payload) for h in alone]
        assert [h.score for h in hits] == pytest.approx([h.score for h in alone], rel=1e-6)
        for hit, other in zip(hits, alone, strict=True):
            assert set(hit.vectors) == set(other.vectors)
            assert (VECTOR_NAME in hit.vectors) == search.with_vectors
            for name in hit.vectors:
                np.testing.assert_allclose(hit.vectors[name], other.vectors[name], atol=1e-6)
    assert hybrid_index.fused_searches([]) == []


def test_points_hold_payload_and_vector_in_the_order_asked(hybrid_index: VectorIndex):
    wanted = ["toy-08", "out-01", "never-stored", "toy-08"]

    points = hybrid_index.points(wanted)

    assert [p.item_id for p in points] == ["toy-08", "out-01", "toy-08"]
    for point in points:
        assert point.payload == item_payload(BY_ID[point.item_id])
        np.testing.assert_allclose(
            point.vectors[VECTOR_NAME], VECTOR_BY_ID[point.item_id], atol=1e-5
        )
    collab = hybrid_index.points(["kit-01", ITEMS[-1].item_id], using=COLLAB_VECTOR)
    assert [p.item_id for p in collab] == ["kit-01"]  # the last item has no collab vector
    np.testing.assert_allclose(collab[0].vectors[COLLAB_VECTOR], COLLAB["kit-01"], rtol=1e-5)
    assert hybrid_index.points([]) == []


def test_a_search_without_payload_ranks_as_one_with_it(hybrid_index: VectorIndex):
    """`with_payload=False` answers the same ids and scores, each payload holding only the
    item's id; `hits` then reads the whole payload and every dense vector, in the order asked."""
    taste = Source(VECTOR_NAME, _query("kit-01"))
    collab = Source(COLLAB_VECTOR, _RNG.normal(size=COLLAB_DIM), 1.5)
    flt = ItemFilter(in_stock_only=True)
    full = hybrid_index.fused_search([taste, collab], k=12, flt=flt, prefetch=20)
    bare = hybrid_index.fused_search(
        [taste, collab], k=12, flt=flt, prefetch=20, with_payload=False
    )
    [batched] = hybrid_index.fused_searches(
        [FusedSearch((taste, collab), 12, flt, prefetch=20, with_payload=False)]
    )
    nearest = hybrid_index.search(_query("kit-01"), k=7, flt=flt)
    nearest_bare = hybrid_index.search(_query("kit-01"), k=7, flt=flt, with_payload=False)
    for rich, poor in ((full, bare), (full, batched), (nearest, nearest_bare)):
        assert [h.item_id for h in poor] == [h.item_id for h in rich]
        assert [h.score for h in poor] == pytest.approx([h.score for h in rich], rel=1e-6)
        assert all(h.payload == {"item_id": h.item_id} for h in poor)

    wanted = ["kit-01", ITEMS[-1].item_id, "never-stored", "kit-01"]
    hits = hybrid_index.hits(wanted)
    assert [h.item_id for h in hits] == ["kit-01", ITEMS[-1].item_id, "kit-01"]
    for hit in hits:
        assert hit.payload == item_payload(BY_ID[hit.item_id]) and hit.score == 0.0
        np.testing.assert_allclose(hit.vectors[VECTOR_NAME], VECTOR_BY_ID[hit.item_id], atol=1e-5)
    np.testing.assert_allclose(hits[0].vectors[COLLAB_VECTOR], COLLAB["kit-01"], rtol=1e-5)
    assert COLLAB_VECTOR not in hits[1].vectors  # the last item has no collab vector
    assert hybrid_index.hits([]) == []


class _CountingRecord:
    """A returned point or record that counts the reads of its properties (Qdrant Edge builds
    the id, payload and vectors anew at each read)."""

    def __init__(self, point: Any, reads: dict[str, int]) -> None:
        self._point, self._reads = point, reads

    def __getattr__(self, name: str) -> Any:
        self._reads[name] = self._reads.get(name, 0) + 1
        return getattr(self._point, name)


class _CountingShard:
    """A Qdrant Edge shard whose query answers count the reads of each point's properties."""

    def __init__(self, shard: Any) -> None:
        self._shard = shard
        self.reads: list[dict[str, int]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._shard, name)

    def _counted(self, points: list[Any]) -> list[Any]:
        self.reads += [{} for _ in points]
        return [
            _CountingRecord(p, r) for p, r in zip(points, self.reads[-len(points) :], strict=True)
        ]

    def query(self, request: Any) -> list[Any]:
        return self._counted(self._shard.query(request))

    def query_batch(self, request: Any) -> list[list[Any]]:
        return [self._counted(points) for points in self._shard.query_batch(request)]


@pytest.mark.parametrize("reopen", [False, True])
def test_an_edge_ranking_without_payload_reads_each_point_id_once(
    tmp_path: Path, reopen: bool
) -> None:
    """qdrant_edge builds a new Python object at each read of a point's id: a ranking read
    without payload reads each once, whether its item ids are known (written by this index) or read
    from the shard (an index reopened on a folder written before)."""
    index = EdgeIndex(tmp_path / "edge", dim=DIM)
    index.upsert(ITEMS, VECTORS)
    index.set_vectors(COLLAB_VECTOR, COLLAB)
    if reopen:
        index.close()
        index = EdgeIndex(tmp_path / "edge", dim=DIM)
    taste = Source(VECTOR_NAME, _query("kit-01"))
    collab = Source(COLLAB_VECTOR, _RNG.normal(size=COLLAB_DIM), 1.5)
    full = index.fused_search([taste, collab], k=12, prefetch=20)
    near = index.search(_query("kit-01"), k=7)
    counting = _CountingShard(index._shard)
    index._shard = counting  # type: ignore[assignment]
    bare = index.fused_search([taste, collab], k=12, prefetch=20, with_payload=False)
    [batched] = index.fused_searches(
        [FusedSearch((taste, collab), 12, prefetch=20, with_payload=False)]
    )
    nearest = index.search(_query("kit-01"), k=7, with_payload=False)
    index._shard = counting._shard
    index.close()

    assert [h.item_id for h in bare] == [h.item_id for h in batched] == [h.item_id for h in full]
    assert [h.item_id for h in nearest] == [h.item_id for h in near]
    assert len(counting.reads) == len(bare) + len(batched) + len(nearest) == 12 + 12 + 7
    assert all(reads.get("id") == 1 for reads in counting.reads), counting.reads


def _by_score(hits: list[Hit]) -> list[tuple[float, str, dict[str, Any]]]:
    return sorted((-round(h.score, 6), h.item_id, h.payload) for h in hits)


class _RecordingShard(_CountingShard):
    """A counting shard that also keeps the requests of each batch query."""

    def __init__(self, shard: Any) -> None:
        super().__init__(shard)
        self.requests: list[Any] = []

    def query_batch(self, request: Any) -> list[list[Any]]:
        self.requests += list(request.queries)
        return super().query_batch(request)


def test_an_edge_batch_reads_no_answer_payload_and_runs_a_match_once_per_answer(
    tmp_path: Path,
) -> None:
    """`EdgeIndex.fused_searches` asks Qdrant Edge for ids and scores only (payloads and vectors
    come from the points the index keeps), and a match re-ordered by sources is re-scored by
    the ids of the whole match asked in the same batch: its keywords go to Qdrant once per
    answer, not once more under each source. The answers are each fused search's own, vectors
    to the bit."""
    index = EdgeIndex(tmp_path / "edge", dim=DIM)
    index.upsert(ITEMS, VECTORS)
    index.set_vectors(COLLAB_VECTOR, COLLAB)
    text = Source.lexical("wool winter")
    match = Match((text, Source(VECTOR_NAME, _query("out-01"))), 12, fusion="dbsf")
    factor = _RNG.normal(size=COLLAB_DIM)
    sources = (
        Source(VECTOR_NAME, _query("kit-01")),
        Source(COLLAB_VECTOR, factor, 2.0),
        Source(COLLAB_VECTOR, factor + _RNG.normal(size=COLLAB_DIM), 1.0),
    )
    flt = ItemFilter(in_stock_only=True)
    searches = [
        FusedSearch((), 12, flt, 20, with_vectors=True, match=match),
        FusedSearch(sources, 8, flt, 20, match=match, with_payload=False),
    ]
    alone = [
        index.fused_search(
            list(s.sources),
            k=s.k,
            flt=s.flt,
            prefetch=s.prefetch,
            with_vectors=s.with_vectors,
            match=s.match,
            with_payload=s.with_payload,
        )
        for s in searches
    ]
    recording = _RecordingShard(index._shard)
    index._shard = recording  # type: ignore[assignment]
    answers = index.fused_searches(searches)
    index._shard = recording._shard
    stored = {hit.item_id: hit for hit in index.hits([h.item_id for h in alone[0]])}
    index.close()

    assert len(answers[0]) == 12 and len(answers[1]) == 8
    for hits, expected in zip(answers, alone, strict=True):
        # Qdrant orders items of equal score arbitrarily from one query to the next.
        assert _by_score(hits) == _by_score(expected)
        assert [h.score for h in hits] == pytest.approx([h.score for h in expected], rel=1e-6)
    for hit in answers[0]:
        assert set(hit.vectors) == set(stored[hit.item_id].vectors)
        for name, vector in hit.vectors.items():
            assert vector.tobytes() == stored[hit.item_id].vectors[name].tobytes()
    assert all(set(reads) <= {"id", "score"} for reads in recording.reads), recording.reads
    # The keywords' sparse vector: once in the match alone, once as the other's match order.
    assert sum(repr(r).count("SparseVector") for r in recording.requests) == 2


def test_stored_points_and_hits_read_each_record_once() -> None:
    """A retrieved record's payload and vectors are read once each (Qdrant Edge converts them
    anew at each read); a hit's vectors only when looked at."""
    records = [
        SimpleNamespace(
            payload=item_payload(item),
            vector={VECTOR_NAME: VECTOR_BY_ID[item.item_id].tolist(), COLLAB_VECTOR: [1.0] * 4},
        )
        for item in ITEMS[:3]
    ]
    wanted = [ITEMS[2].item_id, "never-stored", ITEMS[0].item_id]
    for using in (VECTOR_NAME, COLLAB_VECTOR):
        reads: list[dict[str, int]] = [{} for _ in records]
        points = stored_points(
            wanted, [_CountingRecord(r, n) for r, n in zip(records, reads, strict=True)], using
        )
        assert [p.item_id for p in points] == [ITEMS[2].item_id, ITEMS[0].item_id]
        assert all(p.vectors[using].dtype == np.float32 for p in points)
        assert all(n == {"payload": 1, "vector": 1} for n in reads), reads
    reads = [{} for _ in records]
    hits = stored_hits(wanted, [_CountingRecord(r, n) for r, n in zip(records, reads, strict=True)])
    assert [h.item_id for h in hits] == [ITEMS[2].item_id, ITEMS[0].item_id]
    assert all(n == {"payload": 1} for n in reads), reads
    for hit in hits:
        assert VECTOR_NAME in hit.vectors and "other" not in hit.vectors
        np.testing.assert_array_equal(hit.vectors[VECTOR_NAME], VECTOR_BY_ID[hit.item_id])
        assert hit.vector is not None and hit.vectors.get("other") is None
    assert [n.get("vector") for n in reads] == [1, None, 1]  # the one not asked for: never


def test_a_hit_is_frozen_and_compares_without_its_vectors() -> None:
    hit = Hit("kit-01", 0.5, {"item_id": "kit-01"})
    assert hit.vectors == {} and hit.vectors is not Hit("x", 0.0, {}).vectors
    assert hit == Hit("kit-01", 0.5, {"item_id": "kit-01"}, {VECTOR_NAME: np.ones(3)})
    assert hit != Hit("kit-01", 0.25, {"item_id": "kit-01"})
    with pytest.raises(AttributeError):
        hit.score = 1.0  # type: ignore[misc]
    moved = replace(hit, score=0.75)
    assert (moved.item_id, moved.score, moved.payload) == ("kit-01", 0.75, hit.payload)
    assert Hit(item_id="a", score=1.0, payload={}, vectors={"c": np.ones(2)}).vector is None


class _RetrieveCountingShard:
    """A Qdrant Edge shard that records the point ids each `retrieve` asked for; `during`, when
    set, runs once inside the next retrieve, after the shard answered and before the caller
    sees the answer (a write racing the read)."""

    def __init__(self, shard: Any) -> None:
        self._shard = shard
        self.asked: list[int] = []
        self.during: Callable[[], None] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._shard, name)

    def retrieve(self, ids: list[Any], **kwargs: Any) -> list[Any]:
        self.asked.append(len(ids))
        records = self._shard.retrieve(ids, **kwargs)
        if self.during is not None:
            during, self.during = self.during, None
            during()
        return records


def test_an_edge_index_reads_a_point_once_until_it_is_written(tmp_path: Path) -> None:
    """`hits` and `points` read an item from the shard the first time only; every write of the
    item (upsert, set_vectors, delete) makes the next read see what was written."""
    index = EdgeIndex(tmp_path / "edge", dim=DIM)
    index.upsert(ITEMS, VECTORS)
    index.set_vectors(COLLAB_VECTOR, COLLAB)
    counting = _RetrieveCountingShard(index._shard)
    index._shard = counting  # type: ignore[assignment]

    first = index.hits(["kit-01", "out-01"])
    again = index.hits(["out-01", "kit-01"])
    taste = index.points(["kit-01", "toy-08"])
    assert counting.asked == [2, 1]  # toy-08 only, the second and third time
    assert [h.item_id for h in again] == ["out-01", "kit-01"] and again[1] == first[0]
    assert taste[0].payload == item_payload(BY_ID["kit-01"])
    np.testing.assert_array_equal(taste[0].vectors[VECTOR_NAME], first[0].vectors[VECTOR_NAME])
    with pytest.raises(ValueError):  # a kept vector cannot be changed through a hit
        first[0].vectors[VECTOR_NAME][0] = 1.0

    changed = BY_ID["kit-01"].model_copy(update={"price": 41.0})
    index.upsert([changed], VECTOR_BY_ID["kit-01"][np.newaxis, :])
    assert index.hits(["kit-01"])[0].payload["price"] == 41.0
    moved = -COLLAB["kit-01"]
    index.set_vectors(COLLAB_VECTOR, {"kit-01": moved})
    np.testing.assert_allclose(index.hits(["kit-01"])[0].vectors[COLLAB_VECTOR], moved, rtol=1e-5)
    np.testing.assert_allclose(
        index.points(["kit-01"], using=COLLAB_VECTOR)[0].vectors[COLLAB_VECTOR], moved, rtol=1e-5
    )
    index.delete(["kit-01"])
    assert index.hits(["kit-01", "out-01"])[0].item_id == "out-01"
    assert index.points(["kit-01"]) == []
    index._shard = counting._shard
    index.close()


def test_an_edge_read_racing_a_write_is_not_kept(tmp_path: Path) -> None:
    """A read the shard answered before a write, seen after it, is that read's answer only: the
    next read sees the write."""
    index = EdgeIndex(tmp_path / "edge", dim=DIM)
    index.upsert(ITEMS, VECTORS)
    index.set_vectors(COLLAB_VECTOR, COLLAB)
    counting = _RetrieveCountingShard(index._shard)
    index._shard = counting  # type: ignore[assignment]
    moved = -COLLAB["kit-01"]
    counting.during = lambda: index.set_vectors(COLLAB_VECTOR, {"kit-01": moved})

    raced = index.hits(["kit-01"])
    after = index.hits(["kit-01"])

    np.testing.assert_allclose(raced[0].vectors[COLLAB_VECTOR], COLLAB["kit-01"], rtol=1e-5)
    np.testing.assert_allclose(after[0].vectors[COLLAB_VECTOR], moved, rtol=1e-5)
    index._shard = counting._shard
    index.close()


def test_a_reopened_edge_index_knows_every_item_id_without_reading_payloads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An index opened on a stored shard reads all item ids at open (in pages), so that a
    ranking read without payloads asks the shard for nothing more, however large the catalog:
    filled as hits came in, each id first seen cost a payload read inside a decision."""
    with EdgeIndex(tmp_path / "edge", dim=DIM) as written:
        written.upsert(ITEMS, VECTORS)
    monkeypatch.setattr(edge_module, "SCROLL_BATCH", 7)  # several pages for len(ITEMS) items
    index = EdgeIndex(tmp_path / "edge", dim=DIM)
    assert sorted(index._item_ids.values()) == sorted(item.item_id for item in ITEMS)
    counting = _RetrieveCountingShard(index._shard)
    index._shard = counting  # type: ignore[assignment]
    ranked = index.search(VECTORS[0], k=len(ITEMS), with_payload=False)
    assert len(ranked) == len(ITEMS) and counting.asked == []
    assert ranked[0].item_id == ITEMS[0].item_id
    index._shard = counting._shard
    index.close()


def _write_with_uuid_point_ids(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> list[list[tuple[str, float]]]:
    """A shard as EdgeIndex wrote it before integer point ids: every point under its UUID
    (`retrieval.index.point_id`), with content, collab and lexical vectors; and what it
    answered (`_answers`) before it was closed."""
    with monkeypatch.context() as patched:
        patched.setattr(edge_module, "edge_point_id", point_id)
        with EdgeIndex(folder, dim=DIM) as written:
            written.upsert(ITEMS, VECTORS)
            written.set_vectors(COLLAB_VECTOR, COLLAB)
            return _answers(written)


def _stored_ids(folder: Path) -> list[Any]:
    """The point ids a shard holds, read past EdgeIndex."""
    shard = edge_module.qe.EdgeShard.load(str(folder))
    try:
        records, _ = shard.scroll(edge_module.qe.ScrollRequest(limit=10_000, with_vector=False))
        return [record.id for record in records]
    finally:
        shard.close()


def _answers(index: EdgeIndex) -> list[list[tuple[str, float]]]:
    """What a dense, a fused (content + collab) and a keyword search answer; the keyword
    search's items without their order, which ties in BM25 leave to the point ids."""
    taste = Source(VECTOR_NAME, _query("kit-01"))
    collab = Source(COLLAB_VECTOR, COLLAB["kit-03"], 1.5)
    answers = [
        index.search(_query("toy-02"), k=8),
        index.fused_search([taste, collab], k=12, prefetch=20),
    ]
    lexical = index.fused_search([Source.lexical("wool winter")], k=10)
    return [[(hit.item_id, round(hit.score, 5)) for hit in hits] for hits in answers] + [
        sorted((hit.item_id, 0.0) for hit in lexical)
    ]


def test_an_edge_shard_with_uuid_point_ids_moves_to_integer_ids_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Opened on a shard written with UUID point ids, an index moves every point to its
    integer id (`edge_point_id`) with its payload and all three vectors: the same searches
    answer the same, a later write finds the moved point (no second copy), and the next open
    has nothing to move."""
    folder = tmp_path / "edge"
    expected = _write_with_uuid_point_ids(folder, monkeypatch)
    assert {type(point) for point in _stored_ids(folder)} == {uuid.UUID}

    monkeypatch.setattr(edge_module, "UPSERT_BATCH_SIZE", 7)  # several batches
    with caplog.at_level("WARNING", logger="attune.retrieval"):
        index = EdgeIndex(folder, dim=DIM)
    assert any("UUID" in r.getMessage() and "40 points" in r.getMessage() for r in caplog.records)
    try:
        assert _answers(index) == expected
        assert index.vectors(["kit-03"], using=COLLAB_VECTOR)["kit-03"] == pytest.approx(
            COLLAB["kit-03"]
        )
        index.upsert([BY_ID["kit-04"].model_copy(update={"price": 30.0})], VECTORS[19:20])
        assert index.count() == len(ITEMS)
    finally:
        index.close()
    stored = _stored_ids(folder)
    assert sorted(stored) == sorted(edge_module.edge_point_id(item.item_id) for item in ITEMS)

    caplog.clear()
    with caplog.at_level("WARNING", logger="attune.retrieval"), EdgeIndex(folder, dim=DIM) as again:
        assert again.count() == len(ITEMS)
        assert _answers(again)[0] == expected[0]
    assert not caplog.records


class _FailingUpdates:
    """A shard whose update fails after `allowed` calls, as a full disk would."""

    def __init__(self, shard: Any, allowed: int) -> None:
        self._shard, self.allowed = shard, allowed

    def __getattr__(self, name: str) -> Any:
        return getattr(self._shard, name)

    def update(self, operation: Any) -> None:
        if self.allowed == 0:
            raise Exception("No space left on device")  # qdrant_edge raises plain Exception
        self.allowed -= 1
        self._shard.update(operation)


def test_a_move_to_integer_point_ids_cut_short_is_finished_by_the_next_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A move that fails half way (after a batch written under new ids, before its old ids
    were deleted) releases the folder, loses no item, and the next open finishes it."""
    folder = tmp_path / "edge"
    _write_with_uuid_point_ids(folder, monkeypatch)
    monkeypatch.setattr(edge_module, "UPSERT_BATCH_SIZE", 7)
    load = EdgeIndex._load
    monkeypatch.setattr(
        EdgeIndex, "_load", lambda self, config: _FailingUpdates(load(self, config), 3)
    )
    with pytest.raises(Exception, match="No space left"):
        EdgeIndex(folder, dim=DIM)
    monkeypatch.setattr(EdgeIndex, "_load", load)

    stored = _stored_ids(folder)  # the folder was released: it opens
    assert 0 < sum(isinstance(point, int) for point in stored) < len(ITEMS)
    with EdgeIndex(folder, dim=DIM) as index:
        assert index.count() == len(ITEMS)
        assert sorted(hit.item_id for hit in index.search(VECTORS[0], k=100)) == sorted(BY_ID)
    assert all(isinstance(point, int) for point in _stored_ids(folder))


def test_an_edge_upsert_refuses_an_item_that_would_take_anothers_point(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two item ids with one point id (64 bits of a hash: odds of about n²/2⁶⁵) would make one
    item overwrite the other: the write is refused, naming both, and nothing is written."""
    real = edge_module.edge_point_id
    monkeypatch.setattr(
        edge_module,
        "edge_point_id",
        lambda item_id: real("kit-01") if item_id in ("kit-01", "kit-99") else real(item_id),
    )
    clash = BY_ID["kit-02"].model_copy(update={"item_id": "kit-99"})
    with EdgeIndex(tmp_path / "edge", dim=DIM) as index:
        index.upsert(ITEMS, VECTORS)
        with pytest.raises(ValueError, match="'kit-01' and 'kit-99'"):
            index.upsert([clash], VECTORS[:1])
        with pytest.raises(ValueError, match="'kit-01' and 'kit-99'"):
            index.upsert([clash, BY_ID["kit-01"]], VECTORS[:2])
        assert index.count() == len(ITEMS)
        assert index.points(["kit-01"])[0].payload["title"] == BY_ID["kit-01"].title


def test_an_edge_shard_searches_on_the_calling_thread(tmp_path: Path):
    """`SEARCH_THREADS`: a shard written with Qdrant Edge's default search pool, opened by
    EdgeIndex, is switched to searching on the calling thread, and stores that setting.
    (Which thread runs a search is not visible from Python; `bench/edge_threads.py` measures
    the pool's CPU time.)"""
    qe = edge_module.qe
    folder = tmp_path / "edge"
    first = EdgeIndex(folder, dim=DIM)
    vectors = first._dense_config()
    first.close()
    # Reopened with 0 (Qdrant Edge's own choice, a pool sized by the core count) and closed:
    # the shard now stores the default, as one written before the setting did.
    qe.EdgeShard.load(str(folder), qe.EdgeConfig(vectors=vectors, max_search_threads=0)).close()
    assert json.loads((folder / "edge_config.json").read_text())["max_search_threads"] == 0

    index = EdgeIndex(folder, dim=DIM)
    try:
        index.upsert(ITEMS, VECTORS)
        stored = json.loads((folder / "edge_config.json").read_text())
        assert stored["max_search_threads"] == edge_module.SEARCH_THREADS == 1
        assert index.search(VECTORS[0], k=3)[0].item_id == ITEMS[0].item_id
    finally:
        index.close()


def test_an_edge_shard_from_before_the_collab_threshold_is_rebuilt_once_on_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`COLLAB_FULL_SCAN_KB`: a new shard is created with the collaborative vector's full-scan
    threshold and marked as built under it (`GRAPH_MARKER`). One written with Qdrant's default,
    as before it, has its segments rebuilt at its first open under EdgeIndex (`_regraph`) and
    only then, points and answers kept; a rebuild that did not finish (the shard stores the new
    config, which it does from the load, but no marker says the segments were rebuilt) is run
    again at the next open. (Which plan a search takes is not visible from Python; the bench
    measured 2.1-2.8 ms against 0.2-0.3 ms per filtered search at 100k items, see the
    constant.)"""
    qe = edge_module.qe
    fresh = EdgeIndex(tmp_path / "fresh", dim=DIM)
    fresh.close()
    stored = json.loads((tmp_path / "fresh" / "edge_config.json").read_text())
    graph = stored["vectors"][COLLAB_VECTOR]["hnsw_config"]
    assert graph["full_scan_threshold"] == edge_module.COLLAB_FULL_SCAN_KB == 100
    assert (graph["m"], graph["ef_construct"]) == (16, 100)  # Qdrant's defaults
    assert edge_module.graphed_threshold(tmp_path / "fresh") == 100
    assert edge_module.graphed_threshold(tmp_path / "nowhere") is None

    folder = tmp_path / "old"
    qe.EdgeShard.create(
        str(folder),
        qe.EdgeConfig(
            vectors={
                VECTOR_NAME: qe.EdgeVectorParams(size=DIM, distance=qe.Distance.Cosine),
                COLLAB_VECTOR: qe.EdgeVectorParams(size=64, distance=qe.Distance.Dot),
            },
            sparse_vectors={LEXICAL_VECTOR: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)},
        ),
    ).close()
    rebuilt: list[Path] = []
    regraph = EdgeIndex._regraph

    def counted(self: EdgeIndex) -> None:
        rebuilt.append(self.path)
        if len(rebuilt) == 1:
            raise KeyboardInterrupt  # the first rebuild is cut short
        regraph(self)

    monkeypatch.setattr(EdgeIndex, "_regraph", counted)
    with pytest.raises(KeyboardInterrupt):
        EdgeIndex(folder, dim=DIM)
    assert edge_module.graphed_threshold(folder) is None
    flt = ItemFilter(max_min_age=18)
    with EdgeIndex(folder, dim=DIM) as index:  # rebuilt, this time to the end
        index.upsert(ITEMS, VECTORS)
        first = [hit.item_id for hit in index.search(VECTORS[0], k=5, flt=flt)]
    assert rebuilt == [folder, folder]
    assert edge_module.graphed_threshold(folder) == edge_module.COLLAB_FULL_SCAN_KB
    with EdgeIndex(folder, dim=DIM) as index:
        assert index.count() == len(ITEMS)
        assert [hit.item_id for hit in index.search(VECTORS[0], k=5, flt=flt)] == first
    assert rebuilt == [folder, folder]  # not again
    assert first[0] == ITEMS[0].item_id


def test_an_edge_index_keeps_a_match_asked_alone_until_its_next_write(tmp_path: Path) -> None:
    """The answer of a match asked alone (a text, no person's signal) is kept: asked again
    under the same filter it costs Qdrant nothing and is the same answer. Any write makes it
    stale (a deleted item is gone from the next answer), a filter naming items to leave out is
    never kept, and the list handed out is never the kept one."""
    index = EdgeIndex(tmp_path / "edge", dim=DIM)
    index.upsert(ITEMS, VECTORS)
    text = "wool winter"
    match = Match((Source.lexical(text), Source(VECTOR_NAME, EMBEDDER.embed([text])[0])), 8)
    stock = ItemFilter(in_stock_only=True)
    alone = FusedSearch((), 8, stock, 20, with_vectors=True, match=match)
    recording = _RecordingShard(index._shard)
    index._shard = recording  # type: ignore[assignment]

    [first] = index.fused_searches([alone])
    asked = len(recording.requests)
    [again] = index.fused_searches([alone])
    assert asked == 1 and len(recording.requests) == asked  # the second asked nothing
    assert [(h.item_id, h.score) for h in again] == [(h.item_id, h.score) for h in first]
    for hit, kept in zip(again, first, strict=True):
        assert hit.vector is not None and kept.vector is not None
        assert hit.vector.tobytes() == kept.vector.tobytes()
    # Re-ordered by a person's signal: the kept match is re-scored, the match not run again.
    person = FusedSearch((Source(VECTOR_NAME, _query("kit-01")),), 5, stock, 20, match=match)
    [_, ranked] = index.fused_searches([alone, person])
    assert len(recording.requests) == asked + 1 and len(ranked) == 5
    bare = replace(alone, with_vectors=False, with_payload=False)
    [handed] = index.fused_searches([bare])
    handed.clear()
    assert [h.item_id for h in index.fused_searches([bare])[0]] == [h.item_id for h in first]

    gone = first[0].item_id
    index._shard = recording._shard
    index.delete([gone])
    index._shard = recording  # type: ignore[assignment]
    asked = len(recording.requests)
    [after] = index.fused_searches([alone])
    assert len(recording.requests) == asked + 1
    assert gone not in {h.item_id for h in after} and len(after) == 8

    leaving_out = replace(
        alone, flt=ItemFilter(in_stock_only=True, exclude_ids=(after[0].item_id,))
    )
    index.fused_searches([leaving_out])
    index.fused_searches([leaving_out])
    assert len(recording.requests) == asked + 3
    index._shard = recording._shard
    index.close()
