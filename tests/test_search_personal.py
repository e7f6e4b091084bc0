"""A known person's search: their signals break the match's near-ties, not its order
(`retrieval.hybrid.HybridWeights.in_match`), and an item's reasons name a signal only when it
placed the item higher (`tools.retrieve._lifted`). The measured effect on real queries is
`evals/search_personal.py`'s; these pin the mechanism on a match built by hand."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from retrieval.hybrid import match_sources, text_match
from retrieval.index import VECTOR_NAME, Hit, Source
from tools.retrieve import WEIGHTS, _lifted, _match_terms, _reordered

DIM = 16


def _matched(liked: int, n: int = 50) -> tuple[list[Hit], np.ndarray]:
    """A match of `n` items in the match's order, and a taste vector: the items' content
    vectors put the `liked` one first for that taste, the match's first twenty last (they
    point away from it), and the rest in a random order between."""
    rng = np.random.default_rng(3)
    lean = rng.uniform(-0.5, 0.5, size=n)
    lean[:20] = -1.0 + np.arange(20) * 0.01
    lean[liked] = 1.0
    vectors = np.concatenate([lean[:, None], rng.normal(size=(n, DIM - 1)) * 0.01], axis=1)
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    hits = [
        Hit(f"itm_{i:02d}", 1.0 - i / n, {"item_id": f"itm_{i:02d}"}, {VECTOR_NAME: vectors[i]})
        for i in range(n)
    ]
    taste = np.zeros(DIM, dtype=np.float32)
    taste[0] = 1.0
    return hits, taste


def _person(taste: np.ndarray) -> dict[str, Source]:
    """The service's three sources at its weights, all pointing at `taste`."""
    return {
        name: Source(VECTOR_NAME, taste, getattr(WEIGHTS, name))
        for name in ("taste", "collab", "recent")
    }


def _order(matched: list[Hit], sources: dict[str, Source], in_match: float) -> list[str]:
    match = text_match(WEIGHTS, "anything", None)
    scaled = match_sources(replace(WEIGHTS, in_match=in_match), sources)
    return [hit.item_id for hit in _reordered(matched, _match_terms(matched, match, scaled), 50)]


def test_a_persons_signals_do_not_lift_a_weak_match_into_the_top_ten() -> None:
    """The item the person's three signals all rank first, twentieth in the match, stays out
    of the top 10 as served; at the sources' own weights (x1, before session 20) it led."""
    matched, taste = _matched(liked=20)
    person = _person(taste)

    assert _order(matched, person, 1.0)[0] == "itm_20"
    served = _order(matched, person, WEIGHTS.in_match)
    assert served.index("itm_20") >= 10
    assert set(served[:10]) <= {f"itm_{i:02d}" for i in range(12)}


def test_a_persons_signals_still_break_a_near_tie() -> None:
    """Of two items next to each other in the match, the one the person's signals prefer comes
    first: the search is still theirs where the words cannot tell."""
    matched, taste = _matched(liked=1)
    served = _order(matched, _person(taste), WEIGHTS.in_match)
    assert served.index("itm_01") < served.index("itm_00")


def test_a_signal_is_a_reason_only_for_the_items_it_placed_higher() -> None:
    matched, taste = _matched(liked=1)
    match = text_match(WEIGHTS, "anything", None)
    person = _person(taste)
    person["collab"] = Source(VECTOR_NAME, -taste, WEIGHTS.collab)  # ranks itm_01 last
    scaled = match_sources(WEIGHTS, person)
    terms = _match_terms(matched, match, scaled)
    order = [hit.item_id for hit in _reordered(matched, terms, 50)]

    lifted = _lifted(terms)

    assert "itm_01" in lifted["taste"] and "itm_01" in lifted["recent"]
    assert "itm_01" not in lifted["collab"]  # collab ranks it last
    assert "itm_00" not in lifted["taste"]  # the taste ranks it low
    assert lifted["taste"] == lifted["recent"]
    # Every lifted item is placed above where the fused order of the other terms puts it.
    for name, items in lifted.items():
        others = {
            item: sum(t.get(item, 0.0) for n, t in terms.items() if n != name)
            for item in terms["query"]
        }
        without = sorted(others, key=lambda item: -others[item])
        for item in items:
            assert order.index(item) < without.index(item)
