"""Retrieval at its lower cost ranks exactly as the straightforward path: one query for the
text's match (its re-ordering computed from the answer), titles from the index's payloads, vectors
read only when looked at, popularity kept per catalog version — and a hide in another process is
respected at once."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from small_world import write_small_world

import tools.retrieve as retrieve_module
from agents.factory import build_services
from agents.reindex import start
from agents.services import Services
from agents.settings import Settings
from retrieval.hybrid import taste_vector
from retrieval.index import FusedSearch, Hit, Source, VectorIndex
from retrieval.sequence import ItemItemModel, ItemItemParams, person_history
from store.catalog import PopularCache, get_items, hide_item, popular_items
from store.db import Database
from store.schemas import Channel
from store.users import resolve_subject
from tools.context import RunContext, ToolDeps
from tools.profile import subject_facts
from tools.retrieve import retrieve_candidates
from tools.schemas import RetrieveInput

_NOW = datetime.now(UTC)
QUERIES = [None, "strong coffee beans", "running shoes", "something for the kitchen", "zqxv"]


class StraightIndex:
    """The index as retrieval used it before: one query per search, every vector converted as
    it arrives, titles read from the store."""

    def __init__(self, index: VectorIndex, db: Database) -> None:
        self._index, self._db = index, db
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._index, name)

    def search(self, vector: Any, **kwargs: Any) -> list[Hit]:
        kwargs.update(with_payload=True, with_vectors=True)  # every payload, every vector
        return [replace(h, vectors=dict(h.vectors)) for h in self._index.search(vector, **kwargs)]

    def fused_search(self, sources: Any, **kwargs: Any) -> list[Hit]:
        kwargs.update(with_payload=True, with_vectors=True)
        hits = self._index.fused_search(sources, **kwargs)
        return [replace(h, vectors=dict(h.vectors)) for h in hits]

    def fused_searches(self, searches: Sequence[FusedSearch]) -> list[list[Hit]]:
        answers = []
        for s in searches:
            self.calls += 1
            answers.append(
                self.fused_search(s.sources, k=s.k, flt=s.flt, prefetch=s.prefetch, match=s.match)
            )
        return answers

    def points(self, item_ids: Sequence[str], using: str = "content") -> list[Hit]:
        vectors = self._index.vectors(item_ids, using)
        present = [item_id for item_id in item_ids if item_id in vectors]
        with self._db.session() as session:
            items = get_items(session, present)
        return [
            Hit(i, 0.0, {"title": items[i].title if i in items else i}, {using: vectors[i]})
            for i in present
        ]


class LeakingIndex:
    """An index that ignores every filter it is given."""

    def __init__(self, index: VectorIndex) -> None:
        self._index = index

    def __getattr__(self, name: str) -> Any:
        return getattr(self._index, name)

    def search(self, vector: Any, **kwargs: Any) -> list[Hit]:
        return self._index.search(vector, **{**kwargs, "flt": None})

    def fused_search(self, sources: Any, **kwargs: Any) -> list[Hit]:
        return self._index.fused_search(sources, **{**kwargs, "flt": None})

    def fused_searches(self, searches: Sequence[FusedSearch]) -> list[list[Hit]]:
        return self._index.fused_searches([replace(s, flt=None) for s in searches])


class StorePopular:
    """Popularity read from the store at every call (the catalog's version a decision read
    with the person is of no use to it)."""

    def popular_items(self, session: Any, *, version: int | None = None, **kwargs: Any) -> Any:
        return popular_items(session, **kwargs)


def _straight(tools: ToolDeps) -> ToolDeps:
    index = StraightIndex(tools.index, tools.db)
    return replace(tools, index=index, popular=StorePopular())  # type: ignore[arg-type]


def _retrieve(tools: ToolDeps, subject: Any, query: str | None, k: int = 10) -> dict[str, Any]:
    run = RunContext(deps=tools, subject=subject, channel=Channel.web, now=datetime.now(UTC))
    return retrieve_candidates(run, RetrieveInput(query=query, k=k)).model_dump()


def _people(services: Services, users: list[str | None]) -> list[Any]:
    with services.db.session() as session:
        return [
            resolve_subject(session, user, None if user else f"anon-cost-{n}")
            for n, user in enumerate(users)
        ]


def test_every_path_ranks_as_the_straightforward_one(demo_services: Services) -> None:
    """Known people (with the collaborative model, and with the item-item re-ranking), new
    visitors, with and without text, and a text nothing matches: same items, order, scores,
    score parts, reasons, rules and degraded notes."""
    history = person_history(demo_services.db, "u_0007", None)
    model = ItemItemModel.fit(
        {f"p{n}": [(history[-1][0], 1.0), (history[0][0], 1.0)] for n in range(5)},
        ItemItemParams(),
    )
    strategies = set()
    for tools in (demo_services.tools, replace(demo_services.tools, itemitem=model)):
        straight = _straight(tools)
        for subject in _people(demo_services, ["u_0007", "u_0042", "u_0123", "u_0300", None]):
            for query in QUERIES:
                fast = _retrieve(tools, subject, query)
                assert fast == _retrieve(straight, subject, query), (subject, query)
                assert fast["items"], (subject, query)
                strategies.add(fast["strategy"])
    assert {"hybrid", "popular", "query"} <= strategies


class RecordingIndex:
    """The index, keeping the searches of each batch and their answers."""

    def __init__(self, index: VectorIndex) -> None:
        self._index = index
        self.batches: list[tuple[list[FusedSearch], list[list[Hit]]]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._index, name)

    def fused_searches(self, searches: Sequence[FusedSearch]) -> list[list[Hit]]:
        answers = self._index.fused_searches(searches)
        self.batches.append((list(searches), answers))
        return answers


def test_a_matched_ranking_splits_each_score_as_the_exact_computation(
    demo_services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With text, each shown item's parts are its RRF terms over the whole match, computed here
    from the match's order and vectors read afresh from the shard: the query's by the match
    position, each source's by the item's position in the matched items' similarity to it."""
    tools = demo_services.tools
    recording = RecordingIndex(tools.index)
    signals: list[dict[str, Source]] = []  # the sources each match was re-ordered by
    original = retrieve_module._match_terms

    def match_terms(matched: list[Hit], match: Any, sources: dict[str, Source]) -> Any:
        signals.append(sources)
        return original(matched, match, sources)

    monkeypatch.setattr("tools.retrieve._match_terms", match_terms)
    checked = 0
    for subject in _people(demo_services, ["u_0007", "u_0042", "u_0123", "u_0300", None]):
        for query in ("strong coffee beans", "running shoes", "something for the kitchen"):
            recording.batches.clear()
            signals.clear()
            found = _retrieve(replace(tools, index=recording), subject, query)  # type: ignore[arg-type]
            searches, answers = recording.batches[-1]  # the match
            matched = [hit.item_id for hit in answers[0]]
            terms = {"query": _rrf_terms(matched, searches[0].match.weight)}  # type: ignore[union-attr]
            present = [n for n in ("taste", "collab", "recent") if found["items"][0]["parts"][n]]
            sources = signals[-1].values() if signals else []
            for name, source in zip(present, sources, strict=True):
                fresh = tools.index.vectors(matched, source.using)  # the shard's, not kept ones
                ids = [item_id for item_id in matched if item_id in fresh]
                similarity = np.array([fresh[i] for i in ids]) @ source.dense
                order = [ids[i] for i in np.argsort(-similarity, kind="stable")]
                terms[name] = _rrf_terms(order, source.weight)
            for item in found["items"]:
                parts = {name: values.get(item["item_id"], 0.0) for name, values in terms.items()}
                total = sum(parts.values())
                for name, part in parts.items():
                    assert item["parts"][name] == round(part / total, 4), (query, item, name)
                checked += 1
    assert checked >= 100


def _rrf_terms(order: list[str], weight: float) -> dict[str, float]:
    return {item_id: 1 / ((p + 1) / weight + 60 - 1) for p, item_id in enumerate(order)}


def test_a_hide_in_another_process_is_respected_by_the_next_decision(tmp_path: Path) -> None:
    """Two services on one database (each its own index folder, as two workers on one Qdrant
    server would share one): a hide in one reaches the other's cached popularity at once, and
    the cache answers as the store does before and after."""
    world = write_small_world(tmp_path / "world")
    first = build_services(Settings(home=tmp_path / "one", seed=1))
    try:
        start(first, world)
        url = first.settings.resolved_database_url
        second = build_services(Settings(home=tmp_path / "two", seed=1, database_url=url))
        try:
            start(second, None)  # its index is built from the shared store
            anonymous, known = _people(first, [None, "u_0001"])
            straight = _straight(first.tools)
            before = _retrieve(first.tools, anonymous, None)
            assert before["strategy"] == "popular"
            assert before == _retrieve(straight, anonymous, None)
            top = before["items"][0]["item_id"]
            with second.db.session() as session:
                hide_item(session, top)
            for services in (first, second):  # the index two workers would share
                services.index.delete([top])
            for subject in (anonymous, known):
                for query in (None, "kitchen"):
                    after = _retrieve(first.tools, subject, query)
                    assert top not in [item["item_id"] for item in after["items"]]
            after = _retrieve(first.tools, anonymous, None)
            assert after == _retrieve(straight, anonymous, None)
            assert after["items"][0]["item_id"] == before["items"][1]["item_id"]
            with first.db.session() as session:
                _cache_answers_as_the_store(session, [top, before["items"][2]["item_id"]])
        finally:
            second.close()
    finally:
        first.close()


def _cache_answers_as_the_store(session: Any, some_ids: list[str]) -> None:
    """For each filter, with and without exclusions, and longer than the kept headroom."""
    cache = PopularCache(headroom=2)
    for exclude in ((), tuple(some_ids)):
        for limit in (3, 10, 40):
            for kwargs in (
                {},
                {"categories": ["kitchen", "coffee_tea"]},
                {"max_min_age": 12, "in_stock_only": False},
            ):
                args: dict[str, Any] = {"limit": limit, "exclude_ids": exclude, **kwargs}
                assert cache.popular_items(session, **args) == popular_items(session, **args)
                assert cache.popular_items(session, **args) == popular_items(session, **args)


def test_an_index_that_ignores_the_filters_leaks_nothing(demo_services: Services) -> None:
    """The item rules are re-checked on what would be shown: with an index that ignores every
    filter, no shown item breaks a rule, k are still shown, and the rules that removed items
    say so (`removed`, naming items that are not shown)."""
    tools = demo_services.tools
    leaking = replace(tools, index=LeakingIndex(tools.index))  # type: ignore[arg-type]
    users = [f"u_{n:04d}" for n in range(1, 400, 7)]
    removed_somewhere = set()
    for subject in _people(demo_services, users):
        for query in (None, "something for the kitchen"):
            found = _retrieve(leaking, subject, query)
            shown = [item["item_id"] for item in found["items"]]
            assert len(shown) == 10, (subject, query)
            run = RunContext(deps=tools, subject=subject, channel=Channel.web, now=_NOW)
            with demo_services.db.session() as session:
                items = get_items(session, shown)
            kept = tools.policy.check_items([items[i] for i in shown], subject_facts(run)).kept
            assert [item.item_id for item in kept] == shown, (subject, query)
            for rule in found["rules_fired"]:
                if rule["effect"] == "removed":
                    assert rule["targets"] and not set(rule["targets"]) & set(shown)
                    removed_somewhere.add(rule["rule_id"])
    assert removed_somewhere  # the demo world has people whose rules remove leaked items


def test_the_taste_vector_is_numpys_weighted_average_to_the_bit() -> None:
    """`taste_vector` does np.average's arithmetic without its dispatch: the same bits, for
    content (normalized) and collab (not) vectors, from one recent item to more than a block."""
    rng = np.random.default_rng(3)
    for n in (1, 2, 7, 8, 9, 10, 17, 40):
        for dim in (64, 384):
            vectors = rng.normal(size=(n, dim)).astype(np.float32)
            weights = 0.5 ** (np.arange(n) / 5.0)
            mean = np.average(vectors, axis=0, weights=weights)
            for normalize, expected in ((False, mean), (True, mean / np.linalg.norm(mean))):
                got = taste_vector(vectors, normalize=normalize)
                assert got is not None and got.dtype == expected.dtype
                assert got.tobytes() == expected.tobytes(), (n, dim, normalize)
    assert taste_vector(np.zeros((0, 8), dtype=np.float32)) is None
