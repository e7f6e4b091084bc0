"""A decision's read of the person's history does not grow with their events (issue 14), and the
re-ranking reads from it exactly what it read from their latest 1,000 events.

- the maintained row (`store.sequences`) gives `ItemItemModel.inputs` the same inputs, bit for
  bit, as the raw events, on random event streams (out of order, anonymous ids linked at login,
  repeated items, items the model does not know);
- the history read runs the same SQLite VM steps and returns a bounded history for a person with
  10 events and one with 5,000;
- the vectorised `inputs`, `candidate_scores` and `sources_of` equal the per-event reference
  (the dict-based code they replace) to the last bit.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from retrieval.sequence import (
    _HISTORY,
    History,
    ItemItemModel,
    ItemItemParams,
    _dense_rows,
    person_history,
)
from store.db import Database
from store.erasure import erase_person, find_person
from store.events import ingest_events
from store.models import PersonSequence
from store.schemas import Event, EventType, Profile, UserRecord
from store.sequences import DISTINCT, RECENT, fold_sequence
from store.users import link_identity, upsert_user

START = datetime(2026, 1, 1, tzinfo=UTC)
TYPES = list(EventType)


def _raw(db: Database, user_id: str | None, anonymous_id: str | None) -> list[tuple[str, float]]:
    """The latest 1,000 events, as `person_history` read them before the maintained row."""
    from retrieval.collab import EVENT_WEIGHTS

    with db.connect() as connection:
        rows = connection.execute(
            _HISTORY[bool(user_id), bool(anonymous_id)],
            {"user_id": user_id, "anonymous_id": anonymous_id, "limit": 1000},
        ).all()
    return [(item, EVENT_WEIGHTS.get(kind, 1.0)) for item, kind in reversed(rows)]


def _model(items: int, seed: int) -> ItemItemModel:
    rng = np.random.default_rng(seed)
    names = [f"i{j}" for j in range(items)]
    histories = {
        f"p{p}": [(names[j], 1.0) for j in rng.choice(items, 12, replace=True)] for p in range(60)
    }
    return ItemItemModel.fit(histories, ItemItemParams(regularization=2.0, window=3))


def _equal_inputs(model: ItemItemModel, a: History, b: History) -> None:
    x, y = model.inputs(a), model.inputs(b)
    for name in ("seen", "weights", "voters", "votes"):
        got, want = getattr(x, name), getattr(y, name)
        assert got.dtype == want.dtype and np.array_equal(got, want), name


def _events(
    rng: np.random.Generator, n: int, people: list[str], items: int, prefix: str = "e"
) -> Iterator[Event]:
    for e in range(n):
        person = people[int(rng.integers(len(people)))]
        user, anonymous = (person, None) if person.startswith("u") else (None, person)
        if person.startswith("u") and rng.random() < 0.2:  # a login: the user's anonymous id
            anonymous = f"a-{person}"
        yield Event(
            event_id=f"{prefix}{e:06d}",
            type=TYPES[int(rng.integers(len(TYPES)))],
            # Mostly in time order; some events arrive late (older than the newest stored).
            ts=START + timedelta(minutes=e - (int(rng.integers(50)) if rng.random() < 0.1 else 0)),
            user_id=user,
            anonymous_id=anonymous,
            item_id=f"i{int(rng.integers(items))}",
        )


def test_the_row_gives_the_model_what_the_raw_events_give(tmp_path: Path) -> None:
    """Random streams in small batches, anonymous histories joining users; items past the
    model's (`i40`… are unknown to it). Every subject's inputs are bit-equal either way, and the
    row equals a fold of the raw events."""
    db = Database(f"sqlite:///{tmp_path / 'a.db'}")
    rng = np.random.default_rng(7)
    people = ["u1", "u2", "u3", "a-u1", "a-u2", "v1", "v2"]
    model = _model(40, 3)
    stream = list(_events(rng, 900, people, 46))
    for start in range(0, len(stream), 37):
        with db.session() as session:
            ingest_events(session, stream[start : start + 37])
    # People with fewer events than the transitions read (`last`), and than `RECENT`.
    with db.session() as session:
        ingest_events(session, list(_events(rng, 4, ["u8"], 46, "f")))
        ingest_events(session, list(_events(rng, 26, ["u9"], 46, "g")))
    subjects = [("u1", None), ("u2", None), ("u3", None), (None, "a-u1"), (None, "v1")]
    subjects += [("u8", None), ("u9", None)]
    with db.session() as session:
        stored = {row.subject_key: row.state for row in session.query(PersonSequence)}
        for user, anonymous in subjects:
            key = f"user:{user}" if user else f"anon:{anonymous}"
            assert stored[key] == fold_sequence(session, key).dump(), key
    for user, anonymous in subjects:
        compact, raw = person_history(db, user, anonymous), _raw(db, user, anonymous)
        assert len(compact) <= len(raw)
        _equal_inputs(model, compact, raw)
        candidates = [f"i{j}" for j in range(46)]
        assert model.sources_of(candidates, compact) == model.sources_of(candidates, raw)
    # A user id sent with an anonymous id reads the raw events, as before.
    assert person_history(db, "u1", "v1") == _raw(db, "u1", "v1")


def test_links_and_erasure_forget_the_row(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'b.db'}")
    with db.session() as session:
        ingest_events(session, list(_events(np.random.default_rng(1), 120, ["u1", "v9"], 10)))
    model = _model(10, 1)
    with db.session() as session:
        link_identity(session, "anonymous", "v9", "u1")  # an admin's link: v9's events join u1
    with db.session() as session:
        assert session.get(PersonSequence, "user:u1") is None
    _equal_inputs(model, person_history(db, "u1", None), _raw(db, "u1", None))
    with db.session() as session:
        upsert_user(
            session,
            UserRecord(
                user_id="u1", profile=Profile(first_name="A", last_name="B", email="a@example.com")
            ),
        )
    with db.session() as session:
        erase_person(session, find_person(session, "u1"))
    with db.session() as session:
        assert session.get(PersonSequence, "user:u1") is None
    assert person_history(db, "u1", None) == []


class _Steps:
    def __init__(self, db: Database) -> None:
        self.count = 0
        with db.engine.connect() as connection:
            connection.connection.driver_connection.set_progress_handler(self._step, 1)

    def _step(self) -> int:
        self.count += 1
        return 0


@pytest.fixture(scope="module")
def crowded(tmp_path_factory: pytest.TempPathFactory) -> Database:
    """One person with 10 events, one with 5,000 (on 300 items), stored through ingestion."""
    db = Database(f"sqlite:///{tmp_path_factory.mktemp('bound') / 'c.db'}")
    rng = np.random.default_rng(5)
    for user, n in (("few", 10), ("many", 5000)):
        events = [
            Event(
                event_id=f"{user}-{e:05d}",
                type=TYPES[int(rng.integers(len(TYPES)))],
                ts=START + timedelta(seconds=e),
                user_id=user,
                item_id=f"i{int(rng.integers(300))}",
            )
            for e in range(n)
        ]
        for start in range(0, n, 500):
            with db.session() as session:
                ingest_events(session, events[start : start + 500])
    return db


def test_the_history_read_costs_the_same_for_10_and_5000_events(crowded: Database) -> None:
    """The same SQLite VM steps (the raw read of 1,000 events took ~40 times more) and a history
    of at most the distinct items and `RECENT` events, not the events."""
    steps = _Steps(crowded)
    person_history(crowded, "few", None)  # warm: the statement's first run prepares it
    cost = {}
    for user in ("few", "many"):
        steps.count = 0
        got = person_history(crowded, user, None)
        cost[user] = steps.count, len(got)
    assert cost["many"][0] == cost["few"][0]
    assert cost["few"][1] == 10  # no more events than `RECENT`: the events alone
    assert cost["many"][1] <= 300 + RECENT
    steps.count = 0
    raw = _raw(crowded, "many", None)
    assert len(raw) == 1000 and steps.count > 10 * cost["many"][0]


def test_past_the_distinct_cap_the_row_stays_bounded(tmp_path: Path) -> None:
    """More distinct items than `DISTINCT`: the ones touched longest ago leave the row."""
    db = Database(f"sqlite:///{tmp_path / 'd.db'}")
    n = DISTINCT + 30
    events = [
        Event(
            event_id=f"e{e:05d}",
            type=EventType.view,
            ts=START + timedelta(seconds=e),
            user_id="u",
            item_id=f"i{e}",
        )
        for e in range(n)
    ]
    with db.session() as session:
        ingest_events(session, events[: n // 2])
    with db.session() as session:
        ingest_events(session, events[n // 2 :])
    got = person_history(db, "u", None)
    assert len(got) == DISTINCT + RECENT
    assert got[0] == ("i30", 1.0) and got[DISTINCT - 1] == (f"i{n - 1}", 1.0)
    assert got[DISTINCT:] == [(f"i{e}", 1.0) for e in range(n - RECENT, n)]


# -- the vectorised scores against the per-event reference they replace ------------------------


def _reference_scores(
    model: ItemItemModel, candidates: list[str], history: History
) -> tuple[np.ndarray, np.ndarray]:
    """`candidate_scores` as it was (dicts filled event by event)."""
    take = np.array([model.column.get(item, -1) for item in candidates], dtype=np.int64)
    known = take >= 0
    latest: dict[int, float] = {}
    for item, weight in history:
        j = model.column.get(item)
        if j is not None:
            latest[j] = weight
    seen = [j for j, weight in latest.items() if weight != 0]
    ease = np.zeros(len(candidates))
    if seen and known.any():
        weights = np.array([latest[j] for j in seen], dtype=np.float32)
        ease[known] = weights @ model.ease[np.ix_(np.asarray(seen, dtype=np.int64), take[known])]
    recent = [model.column[item] for item, _ in history if item in model.column]
    recent = recent[-model.params.last :]
    votes: dict[int, float] = {}
    for age, j in enumerate(reversed(recent)):
        votes[j] = votes.get(j, 0.0) + model.params.decay**age
    transitions = np.zeros(len(candidates))
    if votes and known.any():
        rows = list(votes)
        block = _dense_rows(model.transitions, rows)[:, take[known]]
        transitions[known] = np.array([votes[j] for j in rows]) @ block
    return ease, transitions


def _reference_sources(
    model: ItemItemModel, items: list[str], history: History
) -> dict[str, tuple[str | None, str | None]]:
    """`sources_of` as it was: the argmax over dicts of the history's items."""
    found: dict[str, tuple[str | None, str | None]] = {item: (None, None) for item in items}
    latest: dict[str, float] = {}
    for seen, weight in history:
        if seen in model.column:
            latest[seen] = weight
    seen_items = [seen for seen, weight in latest.items() if weight != 0]
    recent = [seen for seen, _ in history if seen in model.column][-model.params.last :]
    votes: dict[str, float] = {}
    for age, seen in enumerate(reversed(recent)):
        votes[seen] = votes.get(seen, 0.0) + model.params.decay**age
    for item in items:
        if item not in model.column:
            continue
        j = model.column[item]
        ease_cells = [float(model.ease[model.column[s], j]) for s in seen_items]
        next_cells = [float(model.transitions[model.column[s], j]) for s in votes]
        best: list[Any] = []
        for names, weights, cells in (
            (seen_items, [latest[s] for s in seen_items], ease_cells),
            (list(votes), list(votes.values()), next_cells),
        ):
            contributions = [w * c for w, c in zip(weights, cells, strict=True)]
            top = int(np.argmax(contributions)) if contributions else -1
            best.append(names[top] if top >= 0 and contributions[top] > 0 else None)
        found[item] = (best[0], best[1])
    return found


def test_vectorised_scores_and_sources_equal_the_per_event_reference() -> None:
    model = _model(30, 11)
    rng = np.random.default_rng(2)
    names = [f"i{j}" for j in range(36)]  # i30… unknown to the model
    for _ in range(200):
        n = int(rng.integers(0, 60))
        history = [
            (names[int(rng.integers(36))], float(rng.choice([0.0, 1.0, 2.0, 3.0, 5.0, 0.37])))
            for _ in range(n)
        ]
        candidates = [names[int(j)] for j in rng.permutation(36)[: int(rng.integers(0, 36))]]
        ease, transitions = model.candidate_scores(candidates, history)
        want_ease, want_transitions = _reference_scores(model, candidates, history)
        assert np.array_equal(ease, want_ease) and np.array_equal(transitions, want_transitions)
        inputs = model.inputs(history)
        assert all(
            np.array_equal(a, b)
            for a, b in zip(
                model.terms(candidates, inputs), model.terms(candidates, history), strict=True
            )
        )
        assert model.sources_of(candidates, inputs) == _reference_sources(
            model, candidates, history
        )
