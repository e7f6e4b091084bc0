"""Garbage collections come between decisions, not in the middle of one (`agents.collector`,
issue 14).

With CPython's default threshold, a collection came about once a decision wherever the decision
was, and every 150-200 decisions in the server a full one (10-23 ms) stalled every request in
line. Here: with the threshold `settle` sets, every collection during a run of decisions is the
one `collect_young` asks for as each decision ends, and none is a full one; with the default
threshold the same decisions are collected mid-way (checked, so the first test can fail); and a
full collection still comes every `FULL_EVERY` decisions, so garbage that reached the oldest
generation is freed.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

import agents.collector as collector
import agents.decide.run as run
from agents.collector import YOUNG_THRESHOLD, tune
from agents.decide.run import DecideRequest, decide
from store.models import User
from store.schemas import Channel

ROOT = Path(__file__).resolve().parents[1]
USERS = [
    json.loads(line)["user_id"]
    for line in (ROOT / "data/demo/users.jsonl").read_text().splitlines()
    if line.strip()
]
QUERIES = [None, "strong coffee beans", None, "something for the kitchen"]
DECISIONS = 24


@pytest.fixture
def thresholds() -> Iterator[None]:
    """The collector's thresholds put back after the test."""
    kept = gc.get_threshold()
    try:
        yield
    finally:
        gc.set_threshold(*kept)


class Collections:
    """The collections that start while installed, each with its generation and whether
    `collect_young` asked for it."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.seen: list[tuple[int, bool]] = []
        self.asked = False

        def asked_for() -> None:
            self.asked = True
            try:
                collector.collect_young()
            finally:
                self.asked = False

        monkeypatch.setattr(run, "collect_young", asked_for)
        gc.callbacks.append(self._started)

    def _started(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self.seen.append((info["generation"], self.asked))

    def close(self) -> None:
        gc.callbacks.remove(self._started)


@pytest.fixture
def collections(monkeypatch: pytest.MonkeyPatch) -> Iterator[Collections]:
    seen = Collections(monkeypatch)
    try:
        yield seen
    finally:
        seen.close()


def _decisions(services) -> None:
    # The demo users still stored: other modules erase some on the shared service, and a
    # decision about an erased person is refused.
    with services.db.session() as session:
        stored = set(session.scalars(select(User.user_id)))
    users = [user for user in USERS if user in stored]
    for n in range(DECISIONS):
        decide(
            services,
            DecideRequest(
                channel=Channel.web, user_id=users[n * 7 % len(users)], query=QUERIES[n % 4]
            ),
        )


def test_tune_raises_only_the_young_threshold(thresholds: None) -> None:
    gc.set_threshold(700, 10, 10)
    tune()
    assert gc.get_threshold() == (YOUNG_THRESHOLD, 10, 10)


def test_collections_come_between_decisions(
    demo_services, thresholds: None, collections: Collections
) -> None:
    _decisions(demo_services)  # first decisions fill caches and import lazily: a warm-up
    tune()
    gc.collect()
    collections.seen.clear()
    _decisions(demo_services)
    assert collections.seen == [(1, True)] * DECISIONS


def test_with_the_default_threshold_collections_come_mid_decision(
    demo_services, thresholds: None, collections: Collections
) -> None:
    """What the test above guards against: CPython's default threshold collects in the
    middle of decisions."""
    gc.set_threshold(700, 10, 10)
    gc.collect()
    collections.seen.clear()
    _decisions(demo_services)
    assert sum(not asked for _, asked in collections.seen) >= DECISIONS // 4


def test_a_full_collection_every_full_every(
    thresholds: None, collections: Collections, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(collector, "FULL_EVERY", 5)
    tune()
    gc.collect()
    collections.seen.clear()
    for _ in range(12):
        run.collect_young()
    generations = [generation for generation, asked in collections.seen if asked]
    assert generations == [1] * 5 + [2] + [1] * 5 + [2]


def test_collect_young_keeps_a_disabled_collector_off(collections: Collections) -> None:
    """A process that turned the collector off (a profiler, a test) is not collected behind its
    back."""
    gc.disable()
    try:
        run.collect_young()
        assert collections.seen == []
        assert not gc.isenabled()
    finally:
        gc.enable()
