"""Features maintained as events arrive equal the features folded from the raw events: on random
event streams (any order, any batches, logins that merge an anonymous history, explicit link
moves, catalog changes), at the edges of the 30-day and purchase windows, after a restart, and
nothing of them is left after erasure. A decision's read of them costs the same work whatever
the person's history."""

from __future__ import annotations

import cProfile
import itertools
import json
import pstats
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import event, select

import store.features
from agents.factory import build_services
from agents.services import Services
from agents.settings import Settings
from api.app import create_app
from store.catalog import upsert_items
from store.db import Database
from store.erasure import find_person
from store.events import compute_features, ingest_events
from store.features import (
    FREQUENCY_DAYS,
    RECENT_PURCHASE_DAYS,
    Features,
    FeatureState,
    _days,
    person_features,
    purchased_items,
    read_features,
)
from store.models import PersonFeatures
from store.person import read_person
from store.schemas import Event, Item
from store.users import Subject, link_identity, resolve_subject

NOW = datetime(2026, 11, 23, 12, tzinfo=UTC)
ITEMS = ["i1", "i2", "i3", "i4", "i5"]  # i5 is not in the catalog until a step adds it
USERS = ["u1", "u2"]
VISITORS = ["a1", "a2", "a3"]
_examples = itertools.count()


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Database:
    database = Database(f"sqlite:///{tmp_path_factory.mktemp('features') / 'attune.db'}")
    yield database
    database.dispose()


def _item(item_id: str, category: str, price: float) -> Item:
    return Item(item_id=item_id, title=item_id, category=category, price=price)


events = st.builds(
    dict,
    kind=st.sampled_from(["view", "click", "add_to_cart", "purchase"]),
    # Whole hours, many equal: ties in time are ordered by event id; some a µs off the hour.
    hours_ago=st.integers(min_value=-48, max_value=24 * 400),
    micros=st.sampled_from([0, 0, 0, 1, -1]),
    item=st.sampled_from(ITEMS),
    who=st.sampled_from(
        [("u1", None), ("u2", None), (None, "a1"), (None, "a2"), ("u1", "a1"), ("u2", "a3")]
    ),
    value=st.one_of(st.none(), st.floats(min_value=0, max_value=1000, allow_nan=False)),
)
steps = st.lists(
    st.one_of(
        st.tuples(st.just("events"), st.lists(events, min_size=1, max_size=8)),
        st.tuples(
            st.just("catalog"),
            st.sampled_from(ITEMS),
            st.sampled_from(["running", "wine", "books"]),
            st.sampled_from([9.0, 15.0, 40.0, 120.0]),
        ),
        st.tuples(st.just("move"), st.sampled_from(VISITORS), st.sampled_from(USERS)),
        st.tuples(st.just("duplicate")),
    ),
    min_size=1,
    max_size=8,
)


def _subjects(prefix: str) -> list[Subject]:
    people = [Subject(f"{prefix}{u}", None) for u in USERS]
    people += [Subject(None, f"{prefix}{a}") for a in VISITORS]
    return [*people, Subject(f"{prefix}u1", f"{prefix}a1"), Subject(f"{prefix}u2", f"{prefix}a2")]


def _assert_decision_read(session, subject: Subject, as_of: datetime, expected: Features) -> None:
    """What a decision reads (its person, then the row's bounded part, purchases back 90 days)
    equals the fold: every feature, and the items bought since any moment it may ask about."""
    person = read_person(session, subject.user_id, subject.anonymous_id)
    if person.subject != subject:
        return  # the decision reads the anonymous visitor by `read_features` (tools.profile)
    since = as_of - timedelta(days=90)
    got = person_features(session, person, as_of=as_of, purchases_since=since)
    assert replace(got, purchases=expected.purchases) == expected, subject
    assert got.purchases.covers(since)
    fold = expected.purchases
    edges = [t for t in fold.times if t >= store.features._micros(since)]
    for moment in {since, as_of, *(store.features._moment(t + d) for t in edges for d in (0, 1))}:
        assert got.purchases.since(moment) == fold.since(moment), (subject, moment)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=steps)
def test_maintained_features_equal_the_fold_of_raw_events(db: Database, steps: list) -> None:
    prefix = f"x{next(_examples)}-"  # each example its own people and items, in one database
    with db.session() as session:
        upsert_items(
            session,
            [
                _item(f"{prefix}{i}", c, p)
                for i, c, p in zip(
                    ITEMS[:4], ["running", "wine"] * 2, [9.0, 15.0, 40.0, 120.0], strict=True
                )
            ],
        )
    sent: list[Event] = []
    for step in steps:
        with db.session() as session:
            if step[0] == "events":
                batch = []
                for e in step[1]:
                    user, visitor = e["who"]
                    batch.append(
                        Event(
                            event_id=f"{prefix}e{len(sent) + len(batch)}",
                            type=e["kind"],
                            ts=NOW - timedelta(hours=e["hours_ago"], microseconds=e["micros"]),
                            item_id=f"{prefix}{e['item']}",
                            user_id=f"{prefix}{user}" if user else None,
                            anonymous_id=f"{prefix}{visitor}" if visitor else None,
                            value=e["value"] if e["kind"] == "purchase" else None,
                        )
                    )
                ingest_events(session, batch)
                sent += batch
            elif step[0] == "catalog":
                upsert_items(session, [_item(f"{prefix}{step[1]}", step[2], step[3])])
            elif step[0] == "move":
                link_identity(
                    session, "anonymous", f"{prefix}{step[1]}", f"{prefix}{step[2]}", move=True
                )
            else:
                ingest_events(session, sent[-3:])  # duplicates change nothing
        # NOW: some events are later. Exactly 30 days after an event, and a µs either side:
        # the edge of `frequency_30d`.
        moments = [NOW + timedelta(days=3), NOW]
        moments += [
            e.ts + timedelta(days=FREQUENCY_DAYS, microseconds=d)
            for e in sent[-2:]
            for d in (-1, 0, 1)
        ]
        with db.session() as session:
            for subject in _subjects(prefix):
                for as_of in moments:
                    expected = compute_features(session, subject, as_of=as_of)
                    assert read_features(session, subject, as_of=as_of) == expected, subject
                    _assert_decision_read(session, subject, as_of, expected)
            # The rows themselves, not a fallback: every stored row folds to the reference.
            for row in session.scalars(
                select(PersonFeatures).where(PersonFeatures.subject_key.like(f"%:{prefix}%"))
            ):
                kind, _, key = row.subject_key.partition(":")
                subject = Subject(key, None) if kind == "user" else Subject(None, key)
                state = FeatureState.load(row.state, row.history)
                assert state is not None
                later = NOW + timedelta(days=3)
                assert state.features(later) == compute_features(session, subject, as_of=later)


def test_a_row_is_kept_per_person_and_read_without_the_events(db: Database) -> None:
    """The row is what a decision reads: changing it changes the features read."""
    with db.session() as session:
        upsert_items(session, [_item("r-shoe", "running", 120.0)])
        ingest_events(
            session,
            [
                Event(
                    event_id=f"r{i}",
                    type="view",
                    ts=NOW - timedelta(days=i),
                    item_id="r-shoe",
                    user_id="r-user",
                )
                for i in range(5)
            ],
        )
    with db.session() as session:
        row = session.get(PersonFeatures, "user:r-user")
        assert row is not None and row.state["count"] == 5
        row.state = {**row.state, "count": 99}
    with db.session() as session:
        assert read_features(session, Subject("r-user", None), as_of=NOW).event_count == 99
        assert compute_features(session, Subject("r-user", None), as_of=NOW).event_count == 5


def test_a_first_read_whose_snapshot_went_stale_answers_from_the_fold(db: Database) -> None:
    # A decision for someone without a row folds their events and stores the fold (a SAVEPOINT,
    # a SELECT by key, an INSERT). When another connection committed a write between that
    # SELECT and the INSERT, SQLite refuses the INSERT at once (the snapshot is stale;
    # busy_timeout cannot help), and the decision failed with a 500 (seen with rewards written
    # in threads beside decisions for new visitors). The fold answers; a later read stores it.
    with db.session() as session:
        upsert_items(session, [_item("stale-shoe", "running", 80.0)])
    wrote: list[str] = []

    def another_connection_writes_first(
        conn: object, cursor: object, statement: str, *args: object
    ) -> None:
        if statement.startswith("INSERT INTO person_features") and not wrote:
            wrote.append(statement)
            with db.session() as other:
                event = Event(
                    event_id="stale-1",
                    type="view",
                    ts=NOW,
                    item_id="stale-shoe",
                    anonymous_id="someone-else",
                )
                ingest_events(other, [event])

    event.listen(db.engine, "before_cursor_execute", another_connection_writes_first)
    try:
        with db.engine.connect() as reader, reader.begin():
            person = read_person(reader, None, "stale-visitor")
            assert person.feature_state is None
            features = person_features(reader, person, as_of=NOW)
    finally:
        event.remove(db.engine, "before_cursor_execute", another_connection_writes_first)
    assert wrote  # the other write came between the fold's read and its INSERT
    assert features == Features(as_of=NOW)
    with db.session() as session:
        assert session.get(PersonFeatures, Subject(None, "stale-visitor").key) is None
    with db.engine.connect() as later, later.begin():
        assert person_features(later, read_person(later, None, "stale-visitor"), as_of=NOW)
    with db.session() as session:
        assert session.get(PersonFeatures, Subject(None, "stale-visitor").key) is not None


def test_features_survive_a_restart_and_a_lost_row_is_rebuilt(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, seed=3)
    services = build_services(settings)
    with services.db.session() as session:
        upsert_items(session, [_item("s-mug", "kitchen", 12.0), _item("s-pan", "kitchen", 60.0)])
        ingest_events(
            session,
            [
                Event(
                    event_id="s1",
                    type="purchase",
                    ts=NOW - timedelta(days=2),
                    item_id="s-mug",
                    user_id="s-user",
                    value=12.0,
                ),
                Event(
                    event_id="s2",
                    type="view",
                    ts=NOW - timedelta(days=1),
                    item_id="s-pan",
                    anonymous_id="s-anon",
                ),
                Event(
                    event_id="s3",
                    type="click",
                    ts=NOW,
                    item_id="s-pan",
                    user_id="s-user",
                    anonymous_id="s-anon",
                ),
            ],
        )
    services.close()
    services = build_services(settings)
    try:
        subject = Subject("s-user", None)
        with services.db.session() as session:
            assert session.get(PersonFeatures, "user:s-user") is not None
            expected = compute_features(session, subject, as_of=NOW)
            assert expected.event_count == 3  # the anonymous view counts after the login
            assert read_features(session, subject, as_of=NOW) == expected
            session.query(PersonFeatures).delete()
        with services.db.session() as session:
            assert read_features(session, subject, as_of=NOW) == expected
        with services.db.session() as session:
            assert session.get(PersonFeatures, "user:s-user") is not None  # stored again
            assert resolve_subject(session, None, "s-anon").user_id == "s-user"
    finally:
        services.close()


def test_erasure_deletes_the_persons_feature_rows(demo_services: Services) -> None:
    person = "u_0237"
    with TestClient(create_app(services=lambda: demo_services)) as client:
        decided = client.post("/v1/decide", json={"user_id": person, "channel": "web"})
        assert decided.status_code == 200
        with demo_services.db.session() as session:
            keys = find_person(session, person).subject_keys
            stored = set(session.scalars(select(PersonFeatures.subject_key)))
        assert f"user:{person}" in stored
        assert client.delete(f"/v1/users/{person}").status_code == 200
    with demo_services.db.session() as session:
        left = set(session.scalars(select(PersonFeatures.subject_key)))
    assert not left & set(keys)
    assert left == stored - set(keys)  # everyone else's rows are left alone


_T = FREQUENCY_DAYS * 86_400_000_000  # 30 days, in µs


@settings(max_examples=300, deadline=None)
@given(
    # Moments from 1970 to ~2250 (where a float's spacing differs), and events at the edge of
    # the 30 days before them, a few µs either side, or anywhere in the 31 days kept.
    as_of=st.integers(min_value=_T, max_value=2**53),
    offsets=st.lists(
        st.one_of(
            st.integers(min_value=_T - 3, max_value=_T + 3),
            st.integers(min_value=0, max_value=_T + 86_400_000_000),
        ),
        min_size=1,
        max_size=12,
    ),
)
def test_frequency_counts_what_the_float_test_of_30_days_counts(as_of: int, offsets: list) -> None:
    """`frequency_30d` bisects the window at an integer µs threshold: it counts exactly the
    events `_days(as_of, t) <= 30` counts, events exactly 30 days old included."""
    state = FeatureState()
    times = sorted(as_of - offset for offset in offsets)
    for n, t in enumerate(times):
        state.add("view", t, f"e{n:03d}", "i1", None, None, None)
    moment = store.features._moment(as_of)
    expected = sum(1 for t in times if _days(moment, t) <= FREQUENCY_DAYS)
    assert state.features(moment).frequency_30d == expected


def test_frequency_counts_an_event_exactly_30_days_old(db: Database) -> None:
    edge = timedelta(days=FREQUENCY_DAYS)
    us = timedelta(microseconds=1)
    with db.session() as session:
        upsert_items(session, [_item("f-shoe", "running", 120.0)])
        ingest_events(
            session,
            [
                Event(event_id=f"f{n}", type="view", ts=NOW - ago, item_id="f-shoe", user_id="f")
                for n, ago in enumerate([edge + us, edge, edge - us, timedelta(days=1)])
            ],
        )
    subject = Subject("f", None)
    with db.session() as session:
        for as_of, count in ((NOW - us, 4), (NOW, 3), (NOW + us, 2), (NOW + 2 * us, 1)):
            assert read_features(session, subject, as_of=as_of).frequency_30d == count
            assert compute_features(session, subject, as_of=as_of).frequency_30d == count


def _purchase(n: int, ago: timedelta, item: str, user: str, value: float = 10.0) -> Event:
    return Event(
        event_id=f"{user}-p{n:05d}",
        type="purchase",
        ts=NOW - ago,
        item_id=item,
        user_id=user,
        value=value,
    )


def test_a_decision_reads_the_recent_purchases_only_and_the_rest_when_a_rule_looks_further(
    db: Database,
) -> None:
    days = [1, 10, 10, 89, 90, 91, 200, 400]  # the last purchase repeats an item
    items = ["w-a", "w-b", "w-c", "w-d", "w-e", "w-f", "w-g", "w-a"]
    with db.session() as session:
        upsert_items(session, [_item(i, "wine", 20.0) for i in sorted(set(items))])
        ingest_events(
            session,
            [
                _purchase(n, timedelta(days=d), i, "w")
                for n, (d, i) in enumerate(zip(days, items, strict=True))
            ],
        )
    statements: list[str] = []

    def seen(*args: object) -> None:
        statements.append(str(args[2]))

    event.listen(db.engine, "before_cursor_execute", seen)
    try:
        with db.session() as session:
            person = read_person(session, "w", None)
            expected = compute_features(session, Subject("w", None), as_of=NOW)
            # The bounded part holds the purchases of the 90 days before the newest event (a
            # day ago), oldest first; equal times are in event id order.
            stored = person.feature_state
            assert stored is not None
            assert stored["bought_items"] == ["w-f", "w-e", "w-d", "w-b", "w-c", "w-a"]
            statements.clear()
            recent = person_features(
                session, person, as_of=NOW, purchases_since=NOW - timedelta(days=90)
            )
            assert statements == []  # no statement: the row came with the person
            assert recent.purchase_count == 8 and len(recent.purchases) == 6
            assert replace(recent, purchases=expected.purchases) == expected
            for ago, bought in (
                (90, ("w-a", "w-c", "w-b", "w-d", "w-e")),
                (10, ("w-a", "w-c", "w-b")),
                (199, ("w-a", "w-c", "w-b", "w-d", "w-e", "w-f")),
            ):
                moment = NOW - timedelta(days=ago)
                assert recent.purchases.since(moment) == bought == expected.purchases.since(moment)
            with pytest.raises(ValueError, match="complete from"):
                recent.purchases.since(NOW - timedelta(days=200))
            with pytest.raises(ValueError, match="complete from"):
                list(recent.purchases)
            everything = person_features(
                session, person, as_of=NOW, purchases_since=NOW - timedelta(days=365)
            )
            assert len(statements) == 1 and "history" in statements[0]  # one more SELECT
            assert everything == expected
            order = [0, 2, 1, 3, 4, 5, 6, 7]  # newest first; equal times: the later id first
            assert list(everything.purchases) == [
                (items[n], NOW - timedelta(days=days[n])) for n in order
            ]
            assert purchased_items(session, Subject("w", None), as_of=NOW) == (
                "w-a", "w-c", "w-b", "w-d", "w-e", "w-f", "w-g"
            )  # fmt: skip
    finally:
        event.remove(db.engine, "before_cursor_execute", seen)


def _work_of_a_decision_read(db: Database, user: str) -> tuple[int, int, int]:
    """Python calls, `_moment` calls and statements of reading `user`'s person and features as
    a decision does (the demo policy's 90-day suppression)."""
    moments = [0]
    real = store.features._moment

    def counted(micros: int) -> datetime:
        moments[0] += 1
        return real(micros)

    statements = [0]

    def seen(*_: object) -> None:
        statements[0] += 1

    with db.session() as session:
        person = read_person(session, user, None)  # warm: caches, the row rebuilt if need be
        person_features(session, person, as_of=NOW, purchases_since=NOW - timedelta(days=90))
        profiler = cProfile.Profile()
        store.features._moment = counted
        event.listen(db.engine, "before_cursor_execute", seen)
        try:
            profiler.enable()
            person = read_person(session, user, None)
            features = person_features(
                session, person, as_of=NOW, purchases_since=NOW - timedelta(days=90)
            )
            features.purchases.since(NOW - timedelta(days=90))
            profiler.disable()
        finally:
            store.features._moment = real
            event.remove(db.engine, "before_cursor_execute", seen)
    return pstats.Stats(profiler).total_calls, moments[0], statements[0]  # type: ignore[attr-defined]


def test_a_decision_reads_a_persons_features_with_the_same_work_at_10_and_5000_events(
    db: Database,
) -> None:
    """Two people with the same last 9 events, then one older purchase, or 4,991 older events
    (1,664 purchases among them): reading their features as a decision does makes the same calls, converts the same
    datetimes, runs the same one statement, and the part of the row read is as large."""
    with db.session() as session:
        upsert_items(
            session, [_item(f"g-{i}", c, p) for i, c, p in ((0, "wine", 9.0), (1, "books", 40.0))]
        )
    recent = [
        (n, timedelta(days=n, hours=3), ["view", "purchase"][n % 2], f"g-{n % 2}") for n in range(9)
    ]
    old = [
        (
            9 + n,
            timedelta(days=RECENT_PURCHASE_DAYS + 30 + n / 20),
            ["purchase", "view", "click"][n % 3],
            f"g-{n % 2}",
        )
        for n in range(4991)
    ]
    for user, events in (("g-small", recent + old[:1]), ("g-large", recent + old)):
        with db.session() as session:
            ingest_events(
                session,
                [
                    Event(
                        event_id=f"{user}-{n:05d}",
                        type=kind,
                        ts=NOW - ago,
                        item_id=item,
                        user_id=user,
                        value=5.0 if kind == "purchase" else None,
                    )
                    for n, ago, kind, item in sorted(events, key=lambda e: e[1], reverse=True)
                ],
            )
    with db.session() as session:
        rows = {
            r.subject_key: r
            for r in session.scalars(
                select(PersonFeatures).where(PersonFeatures.subject_key.like("user:g-%"))
            )
        }
        small, large = rows["user:g-small"], rows["user:g-large"]
        assert small.state["count"] == 10 and small.state["purchases"] == 4 + 1
        assert large.state["count"] == 5000 and large.state["purchases"] == 4 + 1664
        # The part a decision reads differs only in its numbers' digits; the rest grew.
        assert len(json.dumps(large.state)) <= len(json.dumps(small.state)) + 40
        assert len(json.dumps(large.history)) > 50 * len(json.dumps(small.history))
    for _ in range(2):  # the first time, SQLAlchemy sets up the statement listener
        large_work = _work_of_a_decision_read(db, "g-large")
        small_work = _work_of_a_decision_read(db, "g-small")
    assert large_work == small_work
    assert large_work[1:] == (2, 1)  # datetimes: recency, last purchase; the person's SELECT
