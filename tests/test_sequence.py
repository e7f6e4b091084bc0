"""The hybrid's re-ranking model (`retrieval.sequence`): transitions counted by hand, candidate
scores against the full matrices, the fusion's two ends, a save/load round trip, and fitting from
the event store in time order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from scipy.sparse import csr_matrix

from retrieval.sequence import (
    ItemItemModel,
    ItemItemParams,
    fit_from_store,
    fuse,
    interaction_matrix,
    store_sequences,
    transition_matrix,
)
from store.db import Database
from store.models import EventRow


def test_transitions_count_each_follower_by_its_distance_and_skip_zero_weights() -> None:
    column = {"a": 0, "b": 1, "c": 2}
    histories = [[("a", 1.0), ("b", 1.0), ("c", 1.0)], [("a", 1.0), ("c", 0.0), ("b", 1.0)]]

    t = transition_matrix(histories, column, window=2).toarray()

    # a: b at distance 1 (1) and 2 (1/2), c at distance 2 (1/2); c with weight 0 does not count.
    assert t[0] == pytest.approx([0, 1.5 / 2.0, 0.5 / 2.0])
    assert t[1] == pytest.approx([0, 0, 1.0])  # b -> c only
    assert t[2] == pytest.approx([0, 1.0, 0])  # c -> b (the weight is the follower's)
    assert transition_matrix(histories, column, window=1).toarray()[0] == pytest.approx([0, 1, 0])
    with pytest.raises(ValueError, match="window"):
        transition_matrix(histories, column, window=0)


def test_candidate_scores_match_the_full_matrices_and_the_fusion_ends() -> None:
    rng = np.random.default_rng(1)
    items = [f"i{j}" for j in range(8)]
    histories = {
        f"u{u}": [(items[j], 1.0) for j in rng.choice(8, 5, replace=False)] for u in range(30)
    }
    params = ItemItemParams(regularization=5.0, window=3, last=2, decay=0.5)
    model = ItemItemModel.fit(histories, params)
    history = [("i1", 1.0), ("i2", 0.0), ("i3", 1.0)]
    candidates = ["i5", "i0", "unknown", "i6"]

    ease, transitions = model.candidate_scores(candidates, history)

    row = np.zeros(len(model.item_ids))
    row[model.column["i1"]] = row[model.column["i3"]] = 1.0  # i2's weight 0 is no signal
    votes = np.zeros(len(model.item_ids))
    votes[model.column["i3"]], votes[model.column["i2"]] = 1.0, 0.5  # the last 2, newest first
    full_ease, full_next = row @ model.ease, model.transitions.T @ votes
    columns = [model.column[c] for c in ("i5", "i0", "i6")]
    assert ease[[0, 1, 3]] == pytest.approx(full_ease[columns], abs=1e-5)
    assert transitions[[0, 1, 3]] == pytest.approx(full_next[columns], abs=1e-6)
    assert ease[2] == transitions[2] == 0.0
    # With both models off, Qdrant's order stands; with EASE alone, EASE's order.
    assert fuse(candidates, ease * 0, transitions * 0, transition_weight=0, qdrant_weight=1,
                rrf_k=60) == candidates  # fmt: skip
    by_ease = fuse(candidates, ease, transitions, transition_weight=0, qdrant_weight=0, rrf_k=60)
    assert by_ease == [candidates[i] for i in np.argsort(-ease, kind="stable")]


def test_the_model_survives_a_save_and_load(tmp_path: Path) -> None:
    histories = {"u1": [("a", 1.0), ("b", 1.0)], "u2": [("b", 1.0), ("c", 1.0), ("a", 1.0)]}
    model = ItemItemModel.fit(histories, ItemItemParams(regularization=1.0, window=2))
    model.save(tmp_path / "itemitem")

    loaded = ItemItemModel.load(tmp_path / "itemitem")

    assert loaded is not None and loaded.item_ids == model.item_ids
    assert loaded.params == model.params
    assert np.asarray(loaded.ease) == pytest.approx(model.ease)
    assert (loaded.transitions != model.transitions).nnz == 0
    assert loaded.rerank(["c", "b"], [("a", 1.0)]) == model.rerank(["c", "b"], [("a", 1.0)])
    assert ItemItemModel.load(tmp_path / "missing") is None
    # With no events yet, the model keeps Qdrant's order.
    empty = ItemItemModel.fit({}, ItemItemParams())
    assert empty.rerank(["b", "a"], [("a", 1.0)]) == ["b", "a"]


def test_fit_from_store_reads_each_persons_events_in_time_order(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'attune.db'}")
    start = datetime(2026, 1, 1, tzinfo=UTC)
    # Stored out of order: the store's `ts` decides the sequence, not the insertion order.
    events = [
        ("e3", "u1", "c", 2),
        ("e1", "u1", "a", 0),
        ("e2", "u1", "b", 1),
        ("e4", "u2", "a", 0),
    ]
    with db.session() as session:
        for event_id, user, item, minute in events:
            session.add(
                EventRow(
                    event_id=event_id,
                    type="purchase" if item == "c" else "view",
                    ts=start + timedelta(minutes=minute),
                    user_id=user,
                    item_id=item,
                )
            )

    sequences = store_sequences(db)
    model = fit_from_store(db, tmp_path / "itemitem", ItemItemParams(regularization=1.0, window=1))

    assert sequences["user:u1"] == [("a", 1.0), ("b", 1.0), ("c", 8.0)]
    assert sequences["user:u2"] == [("a", 1.0)]
    t = model.transitions.toarray()
    assert t[model.column["a"], model.column["b"]] == 1.0  # a was followed by b, never by c
    assert t[model.column["b"], model.column["c"]] == 1.0
    assert ItemItemModel.load(tmp_path / "itemitem") is not None
    x = interaction_matrix(sequences.values(), model.column)
    assert x.shape == (2, 3)
    assert x[0, model.column["c"]] == 8.0
    assert isinstance(x, csr_matrix)


def test_sources_name_the_history_item_that_gave_each_term_the_most() -> None:
    """What an explanation names: the argmax of weight x B[i, j] and of decay^age x T[i, j]."""
    histories = {
        "p1": [("a", 1.0), ("b", 1.0), ("c", 1.0)],
        "p2": [("a", 1.0), ("c", 1.0)],
        "p3": [("b", 1.0), ("d", 1.0)],
        "p4": [("a", 1.0), ("d", 1.0), ("c", 1.0)],
    }
    model = ItemItemModel.fit(histories, ItemItemParams(regularization=1.0, window=1))
    history = [("a", 1.0), ("b", 2.0)]
    for item in "abcd":
        j = model.column[item]
        ease = {s: w * float(model.ease[model.column[s], j]) for s, w in history}
        votes = {s: 0.8**age * model.transitions[model.column[s], j]
                 for age, (s, _) in enumerate(reversed(history))}  # fmt: skip
        best_ease = max(ease, key=lambda s: ease[s])
        best_next = max(votes, key=lambda s: votes[s])
        assert model.sources(item, history) == (
            best_ease if ease[best_ease] > 0 else None,
            best_next if votes[best_next] > 0 else None,
        )
    assert model.sources("d", history)[1] == "b"  # d came right after b; nothing after a
    # The batch the service reads for the shown items at once says the same per item.
    batch = model.sources_of(["d", "unknown", "a", "c", "b"], history)
    assert batch == {item: model.sources(item, history) for item in ["a", "b", "c", "d", "unknown"]}
    assert model.sources("unknown", history) == (None, None)
    assert model.sources("c", []) == (None, None)


def test_transition_scores_read_a_matrix_with_duplicate_entries_as_its_sum() -> None:
    """A CSR matrix may store a cell twice (scipy sums them); the scores read the rows as scipy
    does, whatever the stored layout."""
    items = ["a", "b", "c"]
    rows, cols, vals = [0, 0, 0, 1], [1, 1, 2, 0], [0.25, 0.5, 0.25, 1.0]
    transitions = csr_matrix((vals, (rows, cols)), shape=(3, 3), dtype=np.float32)
    duplicated = csr_matrix(
        (np.array(vals, dtype=np.float32), np.array(cols), np.array([0, 3, 4, 4])), shape=(3, 3)
    )
    assert not duplicated.has_canonical_format
    model = ItemItemModel(items, np.zeros((3, 3), dtype=np.float32), duplicated, ItemItemParams())
    _, scores = model.candidate_scores(["b", "c", "a"], [("b", 1.0), ("a", 1.0)])
    expected = transitions.toarray().T @ np.array([1.0, 0.8, 0.0])  # a newest, b one step back
    assert scores == pytest.approx(expected[[1, 2, 0]])
    assert model.sources("b", [("a", 1.0)]) == (None, "a")
