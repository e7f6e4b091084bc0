"""The store on a real SQLite file: exactly-once events, identity links, features, bandit state."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy.exc import IntegrityError

from store.bandit import add_reward, get_arms
from store.catalog import popular_items, refresh_popularity, upsert_items
from store.db import Database
from store.decisions import log_decision, offer_exposures, record_reward
from store.errors import Conflict, NotFound
from store.events import EventStatus, compute_features, ingest_events
from store.models import User
from store.schemas import Event, Item, Profile, Purpose, UserRecord
from store.users import (
    LinkOutcome,
    get_user,
    link_identity,
    link_owner,
    resolve_subject,
    upsert_user,
)
from tools.bandit import ThompsonSampling

NOW = datetime(2026, 11, 23, 12, tzinfo=UTC)


@pytest.fixture
def db(database_url: str) -> Database:
    database = Database(database_url)
    with database.session() as session:
        upsert_items(
            session,
            [
                Item(
                    item_id="shoe",
                    title="Trail shoe",
                    category="running",
                    price=120,
                    margin=0.3,
                    stock=3,
                ),
                Item(
                    item_id="sock", title="Sock", category="running", price=9, margin=0.5, stock=50
                ),
                Item(
                    item_id="wine",
                    title="Rioja",
                    category="wine",
                    price=15,
                    margin=0.2,
                    stock=9,
                    min_age=18,
                ),
            ],
        )
    return database


def event(event_id: str, kind: str = "view", *, hours_ago: float = 1, **kw) -> Event:
    return Event(
        event_id=event_id,
        type=kind,
        ts=NOW - timedelta(hours=hours_ago),
        item_id=kw.pop("item_id", "shoe"),
        **kw,
    )


def test_wal_mode_is_on(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'attune.db'}")
    with db.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_events_are_stored_exactly_once(db: Database) -> None:
    batch = [event("e1", user_id="u1"), event("e2", user_id="u1"), event("e1", user_id="u1")]
    with db.session() as session:
        assert [r.status for r in ingest_events(session, batch)] == [
            EventStatus.accepted,
            EventStatus.accepted,
            EventStatus.duplicate,
        ]
    with db.session() as session:
        assert [r.status for r in ingest_events(session, batch[:2])] == [
            EventStatus.duplicate,
            EventStatus.duplicate,
        ]
        features = compute_features(session, resolve_subject(session, "u1", None), as_of=NOW)
    assert features.event_count == 2


def test_anonymous_events_count_for_the_user_after_login(db: Database) -> None:
    with db.session() as session:
        ingest_events(
            session,
            [
                event("a1", "view", hours_ago=5, anonymous_id="anon-1", item_id="sock"),
                event("a2", "click", hours_ago=4, anonymous_id="anon-1", item_id="sock"),
                event(
                    "a3",
                    "view",
                    hours_ago=3,
                    anonymous_id="anon-1",
                    user_id="u9",
                    device_id="dev-1",
                ),
            ],
        )
    with db.session() as session:
        subject = resolve_subject(session, None, "anon-1")
        assert subject.user_id == "u9"
        features = compute_features(session, subject, as_of=NOW)
    assert features.event_count == 3
    assert features.recent_item_ids == ("shoe", "sock")


def test_an_event_never_moves_an_identity_link(db: Database) -> None:
    with db.session() as session:
        first = ingest_events(
            session,
            [
                event("l1", anonymous_id="anon-v", device_id="dev-v", user_id="victim"),
                # The same batch: the link made one event earlier already counts.
                event("l2", anonymous_id="anon-v", user_id="thief"),
                event("l3", device_id="dev-v", anonymous_id="anon-t", user_id="thief"),
                event("l4", anonymous_id="anon-v", user_id="victim"),  # already theirs
            ],
        )
    assert [r.status for r in first] == [
        EventStatus.accepted,
        EventStatus.rejected,
        EventStatus.rejected,
        EventStatus.accepted,
    ]
    assert first[1].reason is not None and first[1].reason.startswith("anonymous_id:")
    assert first[2].reason is not None and first[2].reason.startswith("device_id:")
    assert "victim" not in (first[1].reason or "")  # the owner is not disclosed
    with db.session() as session:
        later = ingest_events(session, [event("l5", anonymous_id="anon-v", user_id="thief")])
        assert later[0].status is EventStatus.rejected
        assert link_owner(session, "anonymous", "anon-v") == "victim"
        assert link_owner(session, "device", "dev-v") == "victim"
        # A rejected event links nothing, not even its unclaimed ids.
        assert link_owner(session, "anonymous", "anon-t") is None
        assert compute_features(session, resolve_subject(session, "thief", None), as_of=NOW).is_cold


def test_only_an_explicit_move_merges_a_link(db: Database) -> None:
    with db.session() as session:
        made = link_identity(session, "anonymous", "anon-m", "a")
        again = link_identity(session, "anonymous", "anon-m", "a")
        refused = link_identity(session, "anonymous", "anon-m", "b")
        assert (made.outcome, again.outcome, refused.outcome) == (
            LinkOutcome.created,
            LinkOutcome.unchanged,
            LinkOutcome.conflict,
        )
        assert not refused.linked and link_owner(session, "anonymous", "anon-m") == "a"
        moved = link_identity(session, "anonymous", "anon-m", "b", move=True)
        assert moved.outcome is LinkOutcome.moved and moved.previous_user_id == "a"
        assert link_owner(session, "anonymous", "anon-m") == "b"


def test_a_user_with_another_persons_anonymous_id_is_a_conflict(db: Database) -> None:
    with db.session() as session:
        link_identity(session, "anonymous", "anon-c", "owner")
        assert resolve_subject(session, "owner", "anon-c").user_id == "owner"
        assert resolve_subject(session, None, "anon-c").user_id == "owner"
        with pytest.raises(Conflict, match="anonymous_id"):
            resolve_subject(session, "someone-else", "anon-c")


def test_features_from_events(db: Database) -> None:
    with db.session() as session:
        ingest_events(
            session,
            [
                event(
                    "p1", "purchase", hours_ago=24 * 10, user_id="u1", item_id="shoe", value=120.0
                ),
                event("v1", "view", hours_ago=2, user_id="u1", item_id="wine"),
                event("v0", "view", hours_ago=24 * 40, user_id="u1", item_id="sock"),
            ],
        )
        features = compute_features(session, resolve_subject(session, "u1", None), as_of=NOW)
    assert features.event_count == 3
    assert features.frequency_30d == 2
    assert features.monetary_total == 120.0
    assert features.purchase_count == 1
    assert features.days_since_last_purchase == pytest.approx(10.0)
    assert features.recency_days == pytest.approx(2 / 24, abs=0.01)
    assert features.top_categories(1) == ["running"]  # the purchase outweighs the view
    assert sum(features.category_affinity.values()) == pytest.approx(1.0, abs=1e-3)
    assert features.price_band == "low"  # median of 120, 15 and 9 is 15
    assert features.purchased_since(NOW - timedelta(days=30)) == ("shoe",)
    assert features.purchased_since(NOW - timedelta(days=5)) == ()


def test_popularity_ranking_respects_filters(db: Database) -> None:
    with db.session() as session:
        ingest_events(
            session,
            [event(f"w{i}", item_id="wine", user_id="u1") for i in range(5)]
            + [event("s1", item_id="sock", user_id="u1")],
        )
        refresh_popularity(session)
        assert [i.item_id for i, _ in popular_items(session, limit=3)][:2] == ["wine", "sock"]
        assert next(i.item_id for i, _ in popular_items(session, limit=3, max_min_age=17)) == "sock"
        assert "sock" not in [
            i.item_id for i, _ in popular_items(session, limit=3, exclude_ids=["sock"])
        ]


def test_user_round_trip_and_consent_default(db: Database) -> None:
    profile = Profile(
        first_name="Ada", last_name="Lovelace", email="ada@example.com", birth_date=date(1990, 5, 1)
    )
    with db.session() as session:
        upsert_user(
            session, UserRecord(user_id="u1", profile=profile, consent={Purpose.email: True})
        )
    with db.session() as session:
        record = get_user(session, "u1")
        assert record.profile == profile
        assert record.consent[Purpose.email] is True
        assert record.consent[Purpose.personalization] is False  # never answered means no
        with pytest.raises(NotFound):
            get_user(session, "nobody")


def test_rewards_once_per_decision_and_exposures(db: Database) -> None:
    with db.session() as session:
        log_decision(
            session,
            decision_id="d1",
            subject_key="user:u1",
            user_id="u1",
            channel="web",
            segment="web",
            offer_id="o1",
            created_at=NOW,
            record={},
        )
        log_decision(
            session,
            decision_id="d2",
            subject_key="user:u1",
            user_id="u1",
            channel="web",
            segment="web",
            offer_id=None,
            created_at=NOW,
            record={},
        )
    with db.session() as session:
        assert offer_exposures(session, "user:u1", NOW - timedelta(hours=24)) == [("o1", "web", 1)]
        assert offer_exposures(session, "user:u1", NOW + timedelta(seconds=1)) == []
        record_reward(session, "d1", 1.0)
    with db.session() as session, pytest.raises(Conflict, match="already rewarded"):
        record_reward(session, "d1", 1.0)
    with db.session() as session, pytest.raises(Conflict, match="no offer"):
        record_reward(session, "d2", 1.0)
    with db.session() as session, pytest.raises(NotFound):
        record_reward(session, "nope", 1.0)


def test_concurrent_rewards_lose_no_update(database_url: str) -> None:
    """Eight threads with their own connections each add 25 rewards to one arm."""
    url = database_url
    Database(url)
    workers, per_worker = 8, 25

    def work() -> None:
        db = Database(url)
        for _ in range(per_worker):
            with db.session() as session:
                add_reward(session, "thompson", "web", "o1", 1.0, (1.0, 1.0))
        db.dispose()

    threads = [threading.Thread(target=work) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with Database(url).session() as session:
        arm = get_arms(session, "thompson", "web", ["o1"], lambda _: (1.0, 1.0))["o1"]
    assert arm.pulls == workers * per_worker
    assert arm.alpha == 1.0 + workers * per_worker
    assert arm.beta == 1.0


def test_thompson_sampling_is_seeded_and_reports_propensity(db: Database) -> None:
    with db.session() as session:
        for _ in range(40):
            add_reward(session, "thompson", "web", "good", 1.0, (1.0, 1.0))
            add_reward(session, "thompson", "web", "bad", 0.0, (1.0, 1.0))
        arms = get_arms(session, "thompson", "web", ["good", "bad", "new"], lambda _: (1.0, 1.0))
    first = ThompsonSampling(np.random.default_rng(3)).choose(arms)
    again = ThompsonSampling(np.random.default_rng(3)).choose(arms)
    assert first == again
    assert first.probabilities["good"] > 0.9 > first.probabilities["bad"]
    assert sum(first.probabilities.values()) == pytest.approx(1.0, abs=0.01)
    assert first.propensity == first.probabilities[first.offer_id]
    with pytest.raises(ValueError, match="no eligible offers"):
        ThompsonSampling(np.random.default_rng(0)).choose({})


def test_erased_rows_leave_no_bytes_in_postgresql_table_files(postgres: str) -> None:
    """After erasure and compaction, the person's values are in no file of the database's
    tables and indexes (the write-ahead log is the operator's retention, README says)."""
    from postgres import create_database

    from store.erasure import erase_person, find_person

    marker = "Zyxwvutsrq"
    db = Database(create_database(postgres, "erased_bytes"))
    with db.session() as session:
        profile = Profile(first_name=marker, last_name="Quetzal", email="zyx@example.com")
        upsert_user(session, UserRecord(user_id="u-gone", profile=profile))
    with db.session() as session:
        erase_person(session, find_person(session, "u-gone"))

    def holding_marker() -> list[str]:
        with db.engine.connect() as connection:
            folder = Path(connection.exec_driver_sql("SHOW data_directory").scalar_one())
            oid = connection.exec_driver_sql(
                "SELECT oid FROM pg_database WHERE datname = current_database()"
            ).scalar_one()
            connection.exec_driver_sql("CHECKPOINT")  # dirty pages reach the files
        files = (folder / "base" / str(oid)).iterdir()
        return [f.name for f in files if marker.encode() in f.read_bytes()]

    assert holding_marker(), "the marker should be in a table file before compaction"
    db.compact()
    assert holding_marker() == []
    db.dispose()


def test_a_pooled_connection_the_server_dropped_is_replaced_without_a_ping(
    postgres: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL: a pooled connection whose backend the server ended is replaced when it is
    checked out, and the next transaction runs; and no checkout pings the server (a round
    trip per transaction): the pool's checkout listener polls the socket instead."""
    import time

    import sqlalchemy as sa
    from postgres import create_database

    url = create_database(postgres, "dropped")
    db = Database(url)
    pings: list[object] = []
    dialect = type(db.engine.dialect)
    ping = dialect.do_ping
    monkeypatch.setattr(dialect, "do_ping", lambda self, c: pings.append(c) or ping(self, c))
    with db.reading() as connection:
        first = connection.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
    with db.reading() as connection:  # the pooled connection again, unchanged
        assert connection.exec_driver_sql("SELECT pg_backend_pid()").scalar_one() == first
    other = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with other.connect() as connection:
        assert connection.exec_driver_sql(f"SELECT pg_terminate_backend({first})").scalar()
        for _ in range(100):  # until the backend has gone
            gone = not connection.exec_driver_sql(
                f"SELECT count(*) FROM pg_stat_activity WHERE pid = {first}"
            ).scalar()
            if gone:
                break
            time.sleep(0.05)
    time.sleep(0.1)  # its last message and the end of the socket reach this process
    with db.session() as session:  # would fail on the dropped connection
        assert session.execute(sa.text("SELECT pg_backend_pid()")).scalar_one() != first
    assert pings == [], "a checkout pinged the server"
    other.dispose()
    db.dispose()


def test_a_driver_error_names_no_value_it_was_sent(database_url: str) -> None:
    # Such errors reach the log in background jobs' tracebacks; the values are people's data.
    db = Database(database_url)
    record = UserRecord(
        user_id="u_hidden",
        profile=Profile(first_name="Ada", last_name="Quill", email="ada.quill@example.org"),
        consent={},
    )
    with db.session() as session:
        upsert_user(session, record)
    with pytest.raises(IntegrityError) as raised, db.session() as session:
        session.add(User(user_id="u_hidden", profile=record.profile.model_dump(mode="json")))
    message = str(raised.value)
    assert "INSERT INTO users" in message and "parameters hidden" in message
    # PostgreSQL's own detail of a unique violation quotes the key (`Key (user_id)=(...)`);
    # nothing else of what was sent is in the message.
    assert "ada.quill@example.org" not in message and "Quill" not in message
    if database_url.startswith("sqlite"):
        assert "u_hidden" not in message
    db.engine.dispose()
