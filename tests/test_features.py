"""Features maintained as events arrive equal the features folded from the raw events: on random
event streams (any order, any batches, logins that merge an anonymous history, explicit link
moves, catalog changes), after a restart, and nothing of them is left after erasure."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from agents.factory import build_services
from agents.services import Services
from agents.settings import Settings
from api.app import create_app
from store.catalog import upsert_items
from store.db import Database
from store.erasure import find_person
from store.events import compute_features, ingest_events
from store.features import FeatureState, read_features
from store.models import PersonFeatures
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
    # Whole hours, many equal: ties in time are ordered by event id.
    hours_ago=st.integers(min_value=-48, max_value=24 * 400),
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
                            ts=NOW - timedelta(hours=e["hours_ago"]),
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
        with db.session() as session:
            for subject in _subjects(prefix):
                for as_of in (NOW + timedelta(days=3), NOW):  # NOW: some events are later
                    expected = compute_features(session, subject, as_of=as_of)
                    assert read_features(session, subject, as_of=as_of) == expected, subject
            # The rows themselves, not a fallback: every stored row folds to the reference.
            for row in session.scalars(
                select(PersonFeatures).where(PersonFeatures.subject_key.like(f"%:{prefix}%"))
            ):
                kind, _, key = row.subject_key.partition(":")
                subject = Subject(key, None) if kind == "user" else Subject(None, key)
                state = FeatureState.load(row.state)
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
