"""What a decision writes: every row in one transaction and one commit, all or nothing (in one
statement on PostgreSQL); and the writes that reward a decision from an event survive a
concurrent writer on SQLite."""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from postgres import create_database
from sqlalchemy import String, event, func, inspect, select
from sqlalchemy.engine import ExceptionContext, RootTransaction
from sqlalchemy.exc import DBAPIError

from agents.decide.record import CANDIDATE_FIELDS, _candidate
from agents.decide.run import DecideRequest, decide
from agents.factory import build_services
from agents.seed import seed
from agents.services import Services
from agents.settings import Settings
from api.app import create_app
from store.attribution import reward_source
from store.db import is_retryable
from store.decisions import get_reward
from store.errors import StorageFull
from store.models import DecisionRow, RewardWindow
from store.schemas import Channel
from tests.small_world import write_small_world
from tools.schemas import Candidate, ScoreParts


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    world = write_small_world(tmp_path_factory.mktemp("writes-world"))
    built = build_services(Settings(home=tmp_path_factory.mktemp("writes-home"), seed=7))
    seed(built, world)
    yield built
    built.close()


@pytest.fixture(scope="module")
def pg_services(postgres: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    world = write_small_world(tmp_path_factory.mktemp("pg-writes-world"))
    settings = Settings(
        home=tmp_path_factory.mktemp("pg-writes-home"),
        database_url=create_database(postgres, "writes"),
        seed=7,
    )
    built = build_services(settings)
    seed(built, world)
    yield built
    built.close()


@pytest.fixture(scope="module")
def client(services: Services) -> Iterator[TestClient]:
    with TestClient(create_app(services=lambda: services)) as test_client:
        yield test_client


class Transactions:
    """The transactions a block of code commits, each as a Counter of the statements it sent
    (INSERT into a table, UPDATE, DELETE, SELECT; a statement that inserts into several tables,
    with INSERTs in its WITH, as `INSERT a+b`)."""

    def __init__(self, services: Services) -> None:
        self.engine = services.db.engine
        self.committed: list[Counter[str]] = []
        self._current: Counter[str] = Counter()

    def __enter__(self) -> Transactions:
        event.listen(self.engine, "begin", self._begin)
        event.listen(self.engine, "before_cursor_execute", self._execute)
        event.listen(self.engine, "commit", self._commit)
        return self

    def __exit__(self, *_: object) -> None:
        event.remove(self.engine, "begin", self._begin)
        event.remove(self.engine, "before_cursor_execute", self._execute)
        event.remove(self.engine, "commit", self._commit)

    def _begin(self, _connection: Any) -> None:
        self._current = Counter()

    def _execute(self, _c: Any, _cursor: Any, statement: str, *_: Any) -> None:
        words = statement.split(None, 3)
        verb = words[0].upper()
        if verb == "WITH":
            tables = re.findall(r"INSERT INTO (\w+)", statement)
            self._current[f"INSERT {'+'.join(tables)}" if tables else verb] += 1
        else:
            self._current[f"INSERT {words[2]}" if verb == "INSERT" else verb] += 1

    def _commit(self, _connection: Any) -> None:
        self.committed.append(self._current)

    def writes(self) -> list[Counter[str]]:
        """The committed transactions that wrote, with their writes only."""
        return [
            Counter({k: n for k, n in t.items() if k != "SELECT"})
            for t in self.committed
            if set(t) - {"SELECT"}
        ]


def test_a_decision_writes_its_record_and_window_in_one_commit(services: Services) -> None:
    with Transactions(services) as transactions:
        decision = decide(services, DecideRequest(channel=Channel.web, user_id="u_0003"))
    # One transaction wrote, and it holds every row the decision adds: its record (what the
    # frequency caps count and where its experiment arm is kept) and its attribution window.
    assert transactions.writes() == [Counter({"INSERT decisions": 1, "INSERT reward_windows": 1})]
    with services.db.session() as session:
        row = session.get(DecisionRow, decision.decision_id)
        window = session.get(RewardWindow, decision.decision_id)
        assert row is not None and window is not None
        assert window.item_ids == [c["item_id"] for c in row.record["retrieval"]["candidates"]]
        assert window.offer_id == row.offer_id
        # The record is stored as compact JSON: no spaces after separators, the same document.
        (stored,) = session.execute(
            select(DecisionRow.record.cast(String)).where(
                DecisionRow.decision_id == decision.decision_id
            )
        ).one()
    assert json.loads(stored) == row.record
    assert stored == json.dumps(row.record, separators=(",", ":"), ensure_ascii=False)


def test_on_postgresql_a_decision_writes_both_rows_in_one_statement(
    pg_services: Services,
) -> None:
    """One round trip to the server for both rows: the decision's INSERT is a WITH of the
    window's, and the window's foreign key finds the decision written by the same statement."""
    with Transactions(pg_services) as transactions:
        decision = decide(pg_services, DecideRequest(channel=Channel.web, user_id="u_0003"))
    assert transactions.writes() == [Counter({"INSERT decisions+reward_windows": 1})]
    with pg_services.db.session() as session:
        row = session.get(DecisionRow, decision.decision_id)
        window = session.get(RewardWindow, decision.decision_id)
        assert row is not None and window is not None
        assert row.subject_key == window.subject_key == "user:u_0003"
        assert row.created_at == window.opened_at < window.closes_at
        assert window.item_ids == [c["item_id"] for c in row.record["retrieval"]["candidates"]]
        assert window.offer_id == row.offer_id
        assert row.record["decision_id"] == decision.decision_id


def test_a_decision_whose_last_insert_fails_leaves_nothing_written(services: Services) -> None:
    # The database itself refuses the window's row, the last the decision writes.
    with services.db.engine.begin() as connection:
        connection.exec_driver_sql(
            "CREATE TRIGGER refuse_window BEFORE INSERT ON reward_windows "
            "BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
        )
    try:
        with pytest.raises(DBAPIError, match="injected failure"):
            decide(services, DecideRequest(channel=Channel.web, user_id="u_0004"))
    finally:
        with services.db.engine.begin() as connection:
            connection.exec_driver_sql("DROP TRIGGER refuse_window")
    with services.db.session() as session:
        kept = session.scalar(
            select(func.count())
            .select_from(DecisionRow)
            .where(DecisionRow.subject_key == "user:u_0004")
        )
    assert kept == 0, "the decision's record was kept without its window"
    # Nothing was left behind in the connection either: the next decision is written whole.
    decision = decide(services, DecideRequest(channel=Channel.web, user_id="u_0004"))
    with services.db.session() as session:
        assert session.get(DecisionRow, decision.decision_id) is not None
        assert session.get(RewardWindow, decision.decision_id) is not None


@pytest.mark.parametrize(
    "error, retryable",
    [
        (sqlite3.OperationalError("database is locked"), True),
        (sqlite3.OperationalError("database table is locked"), True),
        (sqlite3.OperationalError("no such table: decisions"), False),
        (sqlite3.IntegrityError("UNIQUE constraint failed: rewards.decision_id"), False),
        (type("PgError", (Exception,), {"sqlstate": "40P01"})(), True),  # deadlock victim
        (type("PgError", (Exception,), {"sqlstate": "40001"})(), True),  # serialization
        (type("PgError", (Exception,), {"sqlstate": "23505"})(), False),  # unique violation
    ],
)
def test_only_a_concurrent_writers_refusal_is_retried(error: Exception, retryable: bool) -> None:
    assert is_retryable(error) is retryable


def test_events_naming_their_decisions_are_stored_while_another_writer_holds_sqlite(
    client: TestClient, services: Services
) -> None:
    """Four batches at once, each rewarding its own decision, while another connection holds
    SQLite's write lock longer than the (here shortened) busy timeout: each first attempt fails
    with 'database is locked' and, once the lock is released, runs again whole."""
    decisions = []
    for user in ("u_0005", "u_0006", "u_0007", "u_0008"):
        response = client.post("/v1/decide", json={"user_id": user, "channel": "web", "k": 5})
        assert response.status_code == 200, response.text
        decisions.append(response.json() | {"user_id": user})
    assert all(d["offer"] is not None for d in decisions), "the demo world offers on the web"
    engine = services.db.engine

    def short_busy_timeout(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute("PRAGMA busy_timeout=50")

    holder = sqlite3.connect(engine.url.database, timeout=5, check_same_thread=False)
    holder.isolation_level = None
    released = threading.Event()
    lock = threading.Lock()
    refusals = Counter[str]()

    def release_on_refusal(context: ExceptionContext) -> None:
        # The first refusal lets the other writer finish: from then on, a retry can succeed.
        if is_retryable(context.original_exception):
            with lock:
                refusals["locked"] += 1
                if not released.is_set():
                    released.set()
                    holder.execute("COMMIT")

    event.listen(engine, "connect", short_busy_timeout)
    event.listen(engine, "handle_error", release_on_refusal)
    engine.dispose()  # new connections get the short timeout
    try:
        holder.execute("BEGIN IMMEDIATE")  # another writer holds the write lock
        now = datetime.now(UTC)

        def click(decision: dict[str, Any]) -> dict[str, Any]:
            response = client.post(
                "/v1/events",
                json={
                    "events": [
                        {
                            "event_id": f"dw-click-{decision['decision_id']}",
                            "type": "click",
                            "ts": (now + timedelta(seconds=2)).isoformat(),
                            "user_id": decision["user_id"],
                            "item_id": decision["items"][0]["item_id"],
                            "decision_id": decision["decision_id"],
                        }
                    ]
                },
            )
            assert response.status_code == 200, response.text
            result: dict[str, Any] = response.json()["results"][0]
            return result

        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(click, decisions))
    finally:
        with lock:
            if not released.is_set():
                released.set()
                holder.execute("ROLLBACK")
        holder.close()
        event.remove(engine, "handle_error", release_on_refusal)
        event.remove(engine, "connect", short_busy_timeout)
        engine.dispose()
    assert refusals["locked"] >= 1, "no write met the held lock: the test proved nothing"
    assert [r["attributed_to"] for r in results] == [d["decision_id"] for d in decisions]
    with services.db.session() as session:
        for decision in decisions:
            assert get_reward(session, decision["decision_id"]) is not None
            source = reward_source(session, decision["decision_id"])
            assert source is not None and source.source == "event"


def test_a_decisions_row_maintains_no_index_another_one_covers(services: Services) -> None:
    """Every index is written on every logged decision: one whose columns begin another's
    serves no read the longer one does not, and only costs the write (the subject's own index
    beside (subject, time) cost 13% of a decision's INSERT and commit)."""
    indexes = [
        tuple(index["column_names"])
        for index in inspect(services.db.engine).get_indexes("decisions")
        if not index.get("unique")
    ]
    assert ("subject_key", "created_at") in indexes, indexes
    covered = [a for a in indexes for b in indexes if a != b and b[: len(a)] == a]
    assert not covered, covered


@pytest.mark.parametrize(
    "parts",
    [
        ScoreParts(),
        ScoreParts(query=0.5, taste=0.25),
        ScoreParts(affinity=0.0, popularity=1e-9, ease=0.1, sequence=-0.0),
    ],
)
def test_the_record_keeps_of_a_candidate_what_its_json_dump_keeps(parts: ScoreParts) -> None:
    """The record builds a candidate's entry without pydantic's serializer: it must be what the
    serializer gives, which holds while the fields it keeps are floats, a str, or None."""
    candidate = Candidate(
        item_id="i_1",
        title="t",
        category="c",
        price=9.5,
        currency="EUR",
        score=0.75,
        parts=parts,
        reasons=["r"],
    )
    expected = candidate.model_dump(mode="json", include=CANDIDATE_FIELDS, exclude_none=True)
    kept = _candidate(candidate)
    assert kept == expected and list(kept) == list(expected)
    assert list(kept["parts"]) == list(expected["parts"])
    assert {name: Candidate.model_fields[name].annotation for name in CANDIDATE_FIELDS} == {
        "item_id": str,
        "price": float,
        "score": float,
        "parts": ScoreParts,
    }
    assert {f.annotation for f in ScoreParts.model_fields.values()} == {float | None}


def test_a_decision_begins_no_sqlalchemy_transaction(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The decision's read and its write run below SQLAlchemy's execution (`store.prepared`):
    the write commits on its connection (`Database.core_transaction`) with no `Transaction`
    object begun, closed and committed around it (`Engine.begin`), and still in one
    transaction, seen by the engine's `begin` and `commit` listeners (the test above)."""
    begun: list[object] = []
    init = RootTransaction.__init__

    def counted(self: RootTransaction, connection: Any) -> None:
        begun.append(self)
        init(self, connection)

    decide(services, DecideRequest(channel=Channel.web, user_id="u_0009"))  # warm
    monkeypatch.setattr(RootTransaction, "__init__", counted)
    with Transactions(services) as transactions:
        decide(services, DecideRequest(channel=Channel.web, user_id="u_0009"))
    assert begun == []
    assert transactions.writes() == [Counter({"INSERT decisions": 1, "INSERT reward_windows": 1})]


def test_a_decision_whose_commit_finds_the_disk_full_is_storage_full(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A driver error of the commit itself goes through the engine's error handling as any
    statement's: a full disk is `StorageFull` (503), reported by /healthz, and nothing of the
    decision is kept."""
    dialect = type(services.db.engine.dialect)

    def full(self: Any, _dbapi_connection: Any) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    with services.db.session() as session:
        before = session.scalar(select(func.count()).select_from(DecisionRow))
    monkeypatch.setattr(dialect, "do_commit", full)
    with pytest.raises(StorageFull):
        decide(services, DecideRequest(channel=Channel.web, user_id="u_0010"))
    monkeypatch.undo()
    problem = services.db.storage_problem()
    assert problem is not None and "full" in problem
    with services.db.session() as session:
        assert session.scalar(select(func.count()).select_from(DecisionRow)) == before
    decide(services, DecideRequest(channel=Channel.web, user_id="u_0010"))  # room again
    assert services.db.storage_problem() is None
