"""Engine and session setup: the only place that knows which database is behind the store.

SQLite is set up for the write path on every connection (`_sqlite_pragmas`):

- `journal_mode=WAL`: a commit appends the transaction's pages to the write-ahead log instead of
  rewriting the database file, and readers and the one writer do not block each other.
- `synchronous=NORMAL`: a commit writes the log but does not wait for the disk; the log is synced
  before each checkpoint (SQLite checkpoints every ~1000 pages of log, about 4 MB). What a
  failure can cost:
  - a crash of the process (killed, out of memory, an error mid-request): nothing that was
    committed. The log lives in the operating system's page cache, which outlives the process,
    and the next connection replays it. A transaction not committed is rolled back whole: a
    decision and its attribution window are kept both or neither (`agents.decide.record`).
  - a power loss or an operating system crash: the transactions committed since the log was
    last synced may be lost — whole transactions, newest first, never half of one — in practice
    the last seconds of decisions, events and rewards, at most the log written since the last
    checkpoint. The database is never corrupted by it. `synchronous=FULL` would keep them at the
    price of one disk flush per commit, i.e. per decision.
  SQLite is the single-machine store; a deployment that must keep every acknowledged write
  through a power loss runs PostgreSQL, whose settings this module leaves alone
  (`synchronous_commit=on` by default: each commit is flushed to disk before it returns).
- `busy_timeout`: a writer waits up to BUSY_TIMEOUT_S for another connection's write lock
  instead of failing at once. It cannot help a transaction that read first and must then
  become a writer after another connection wrote: SQLite answers "database is locked" at once,
  since waiting could deadlock. `Database.transaction` runs such work again from the start.
- `foreign_keys=ON` (the rows that refer to a decision need it) and `secure_delete=ON` (erasure).

A PostgreSQL error's text is rewritten before anyone sees it (`withhold_values`): the server's
DETAIL quotes the row it refused ("Key (user_id)=(u_0181) already exists") and a data
exception's message quotes the value ("invalid input syntax for type integer: ..."), and such
text reaches logged tracebacks, `degraded` notes and problem documents. SQLite's messages name
constraints and columns, never values, and are left as they are.
"""

from __future__ import annotations

import json
import select
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import orjson
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

from store.errors import StorageFull
from store.migrate import upgrade

# /healthz reports storage as failing below these margins, before a write has to fail.
MIN_FREE_BYTES = 8 * 1024 * 1024  # on the database's file system
MIN_FREE_PAGES = 16  # under SQLite's `max_page_count`
# After a write found the storage full, /healthz reports it for this long unless a write
# succeeds first; once the margins above hold again and this has passed, it reports healthy.
FULL_REPORTED_S = 5.0
# How long a writer waits for another connection's write lock on SQLite before "database is
# locked"; and how often, with what pause, `Database.transaction` runs work again after SQLite
# refused it at once (or PostgreSQL chose it as a deadlock's or serialization's victim).
BUSY_TIMEOUT_S = 30
RETRY_ATTEMPTS = 5
RETRY_PAUSE_S = 0.05  # times the attempt's number
# PostgreSQL's serialization_failure and deadlock_detected: the transaction may simply run again.
_PG_RETRYABLE = {"40001", "40P01"}
# SQLSTATE classes whose primary message may quote a value sent: data exceptions and PL/pgSQL's
# RAISE (its text is whatever the function wrote).
_PG_QUOTING_CLASSES = ("22", "P0")
T = TypeVar("T")
# The tables that hold rows about a person: what erasure and pruning delete from.
PERSONAL_TABLES = (
    "users",
    "consents",
    "identity_links",
    "events",
    "decisions",
    "rewards",
    "linear_observations",
    "api_keys",
    "jobs",
    "reward_windows",
    "attributions",
    "reward_sources",
    "person_features",
    "person_sequences",
    "predictions",
    "rank_events",
    "batch_results",
)


# What `json.dumps` also wrote: numpy's scalars; and keys that are not strings (as strings),
# which only the second try takes (`compact_json`).
_ORJSON_STR_KEYS = orjson.OPT_SERIALIZE_NUMPY
_ORJSON = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


def compact_json(value: Any) -> str:
    """A JSON column's text: compact (no spaces after separators, which `json.dumps` adds:
    8% of a decision record) and UTF-8, written by orjson about five times faster than by
    `json.dumps` (0.1 instead of 0.5 ms for a decision record). Read back, the document is the
    same; the one difference is NaN, which is no JSON and becomes null.

    Written first as if every key were a str (a decision record's are), which orjson checks
    as it goes: `OPT_NON_STR_KEYS` costs 40% more on a decision record (11.5 instead of
    8.2 µs), and changes nothing where every key is a str. A document with another key (an
    int, an enum, a str subclass) fails that try and is written by the second, as before."""
    try:
        return orjson.dumps(value, option=_ORJSON_STR_KEYS).decode()
    except orjson.JSONEncodeError:
        return orjson.dumps(value, option=_ORJSON).decode()


def read_json(text: str | bytes) -> Any:
    """A JSON column's value, read by orjson (several times faster than `json.loads` on a
    feature row or a profile); what orjson refuses and `json.loads` accepts (NaN, Infinity,
    written by `json.dumps` before `compact_json`) is read by `json.loads`, as before."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


@contextmanager
def orm_session(bind: Session | Connection) -> Iterator[Session]:
    """`bind` itself when it is a session; else an ORM session in the connection's transaction
    (a savepoint, released when the block ends well and rolled back when it raises), for the rare
    step of a Core read that needs one (`Database.connect`)."""
    if isinstance(bind, Session):
        yield bind
        return
    with Session(bind=bind, join_transaction_mode="create_savepoint") as session:
        yield session
        session.commit()


def make_engine(url: str) -> Engine:
    """An engine for `url`; SQLite files get WAL and a busy timeout so several workers can share
    them (see the module docstring); JSON is written compact and read by orjson on every
    backend. A driver error's message names its statement but not the values sent
    (`hide_parameters`): it may be logged (a background job's traceback), and the values are
    people's ids, profiles and events."""
    if url.startswith("sqlite"):
        database = url.split("///", 1)[-1]
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT_S},
            json_serializer=compact_json,
            json_deserializer=read_json,
            hide_parameters=True,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    engine = create_engine(
        url, json_serializer=compact_json, json_deserializer=read_json, hide_parameters=True
    )
    event.listen(engine.pool, "checkout", _dropped_by_server)
    event.listen(engine, "handle_error", withhold_values)
    return engine


def withhold_values(context: ExceptionContext) -> None:
    """Rewrite a PostgreSQL error's message, and the SQLAlchemy error's around it, to what names
    no value: the primary message (unless its class quotes values, `_PG_QUOTING_CLASSES`), the
    SQLSTATE and the table, column and constraint the server names. DETAIL, HINT and CONTEXT are
    dropped: the server quotes the refused row or key there. The SQLSTATE, which retries and
    `StorageFull` read, and the driver's `diag` are left as they are: code may read them, but a
    traceback or `str()` prints only the message. An error without a SQLSTATE (the connection
    failed) names hosts and ports, not data, and is left alone."""
    original = context.original_exception
    sqlstate = getattr(original, "sqlstate", None)
    diag = getattr(original, "diag", None)
    if not isinstance(sqlstate, str) or diag is None:
        return
    if sqlstate[:2] in _PG_QUOTING_CLASSES:
        primary = "(message withheld: this kind may quote the value sent)"
    else:
        primary = diag.message_primary or "(no message)"
    names = [
        f"{kind} {name}"
        for kind, name in (
            ("table", diag.table_name),
            ("column", diag.column_name),
            ("constraint", diag.constraint_name),
        )
        if name
    ]
    message = f"{primary} [SQLSTATE {sqlstate}{''.join(f'; {n}' for n in names)}; detail withheld]"
    original.args = (message,)
    wrapped = context.sqlalchemy_exception
    if wrapped is not None:
        wrapped.args = (f"({type(original).__module__}.{type(original).__name__}) {message}",)


def _dropped_by_server(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """A pooled connection the server has closed is replaced before it is used: SQLAlchemy's
    pool reconnects a connection whose `checkout` listener raises `DisconnectionError`.

    In place of `pool_pre_ping`, which sent a statement (a round trip, and on psycopg a BEGIN
    too) on every checkout, i.e. every transaction: an idle connection of the pool has nothing
    to read, so a socket that is readable (or in error) is one the server closed — restarted,
    or the backend terminated, both of which send a last error and close — and one that
    libpq already knows to be broken or closed is too. It costs one poll(2) of the socket. As
    with the ping, a connection dropped after the check fails its statement, and SQLAlchemy
    invalidates it and the pool's older connections then."""
    if dbapi_connection.closed or getattr(dbapi_connection, "broken", False):
        raise DisconnectionError("the connection was closed")
    poller = select.poll()
    poller.register(dbapi_connection.fileno(), select.POLLIN | select.POLLPRI)
    if poller.poll(0):
        raise DisconnectionError("the server closed the connection (or sent on an idle one)")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_S * 1000}")
    # Deleted rows are overwritten, not left in free pages: erasure must reach the bytes.
    cursor.execute("PRAGMA secure_delete=ON")
    cursor.close()


def is_storage_full(error: BaseException) -> bool:
    """Whether a driver error says the database or its disk is full (SQLite's SQLITE_FULL,
    PostgreSQL's disk_full)."""
    if isinstance(error, sqlite3.OperationalError):
        code = getattr(error, "sqlite_errorcode", None)
        return code == sqlite3.SQLITE_FULL or "database or disk is full" in str(error)
    return getattr(error, "sqlstate", None) == "53100" or getattr(error, "pgcode", None) == "53100"


def is_retryable(error: BaseException) -> bool:
    """Whether a transaction that failed with `error` failed only for another's concurrent
    write, and may run again from the start: SQLite's "database is locked" (busy or locked),
    PostgreSQL's serialization failure or deadlock victim."""
    original = error.orig if isinstance(error, DBAPIError) else error
    if isinstance(original, sqlite3.OperationalError):
        code = getattr(original, "sqlite_errorcode", None)
        if code is not None:
            return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
        return "database is locked" in str(original) or "table is locked" in str(original)
    code = getattr(original, "sqlstate", None) or getattr(original, "pgcode", None)
    return code in _PG_RETRYABLE


class Database:
    """An engine, its schema and a session factory."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._full_at: float | None = None  # monotonic time of the last write that found it full
        self._lock = threading.Lock()
        event.listen(self.engine, "handle_error", self._on_error)
        upgrade(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def shared(self) -> bool:
        """Whether other processes may write the rows this one writes: a database server
        (PostgreSQL), where a write that locks rows (`FOR UPDATE`) can wait for another process's
        transaction. SQLite is written by one process (`attune serve --workers` refuses it), in
        which the CPU gate (`api.gate`) already takes the writes in turn."""
        return self.engine.dialect.name != "sqlite"

    def _on_error(self, context: ExceptionContext) -> None:
        """Every driver error passes here: a full database or disk becomes `StorageFull`, which
        the API answers with 503 and Retry-After; the transaction is rolled back as usual."""
        if is_storage_full(context.original_exception):
            with self._lock:
                self._full_at = time.monotonic()
            raise StorageFull("The database or its disk is full.") from context.sqlalchemy_exception

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session in one transaction: committed on success, rolled back on any error."""
        with self._sessions.begin() as session:
            yield session
        self._room_again()

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        """A Core connection in one transaction: committed on success, rolled back on any error.

        For statements built with SQLAlchemy Core, the cheaper way in: no ORM session to set up,
        track and flush (a decision's reads, `tools.reads`). `orm_session(connection)` opens a
        session in the same transaction for the rare step that needs one."""
        with self.engine.begin() as connection:
            yield connection
        self._room_again()

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """A Core connection for a request's reads (a decision's, `tools.reads`): no
        transaction begun around them (a `connect` without its begin, commit and their
        objects; a statement alone reads a consistent snapshot on both databases); what
        is written on it all the same (the rare rebuild of a feature row, `orm_session`)
        is committed when the block ends well, as `connect` commits, and rolled back when
        it raises."""
        with self.engine.connect() as connection:
            yield connection
            if connection.in_transaction():
                connection.commit()

    def transaction(self, work: Callable[[Session], T], *, attempts: int = RETRY_ATTEMPTS) -> T:
        """`work(session)` in one transaction, committed; run again from the start, after a
        short pause, when a concurrent writer made the database refuse it (`is_retryable`) —
        the failed attempt was rolled back whole, so nothing of it is kept. Any other error,
        or the last attempt's, is raised. `work` must do nothing outside the session that it
        could not do twice."""

        def once() -> T:
            with self.session() as session:
                return work(session)

        return self._retried(once, attempts)

    def core_transaction(
        self, work: Callable[[Connection], T], *, attempts: int = RETRY_ATTEMPTS
    ) -> T:
        """`transaction` for work made of Core statements only (the decision log's append):
        `work(connection)` on one connection in one transaction, committed, retried as
        `transaction` retries. Without a Session there is no unit of work to begin, flush,
        commit and close around the statements: about 40% of the CPU of a decision's write.

        Nor is there SQLAlchemy's `Transaction` (`Engine.begin`) when `work` sends its
        statements below SQLAlchemy's execution (`store.prepared`), which begins none: the
        DBAPI connection begins its own transaction with the first write, as under
        `Engine.begin`, and `_commit` commits it. The engine's hooks are kept as
        `Engine.begin` runs them: the `begin`, `commit` and `rollback` listeners, and a
        driver error of the commit goes through the engine's error handling (`StorageFull`,
        the invalidation of a dropped connection, the `DBAPIError` retried here)."""
        return self._retried(partial(self._commit, work), attempts)

    def _commit(self, work: Callable[[Connection], T]) -> T:
        """`work(connection)` in one transaction on a connection of the pool, committed; rolled
        back when it raises (see `core_transaction`)."""
        connection = self.engine.connect()
        try:
            if connection._has_events or self.engine._has_events:
                connection.dispatch.begin(connection)
            result = work(connection)
            if connection.in_transaction():  # `work` ran statements through SQLAlchemy too
                connection.commit()
            else:
                connection._commit_impl()
        except BaseException:
            connection._rollback_impl()
            raise
        finally:
            connection.close()
        self._room_again()
        return result

    def _room_again(self) -> None:
        """A write went through: there is room again. The lock is taken only when a full
        storage was reported (reading the attribute needs none)."""
        if self._full_at is not None:
            with self._lock:
                self._full_at = None

    def _retried(self, once: Callable[[], T], attempts: int) -> T:
        """`once()`, run again after a pause when the database refused it as a concurrent
        writer's (`is_retryable`), up to `attempts` times; `once` rolls back what it began."""
        for attempt in range(1, attempts + 1):
            try:
                return once()
            except DBAPIError as error:
                if attempt == attempts or not is_retryable(error):
                    raise
            time.sleep(RETRY_PAUSE_S * attempt)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def storage_problem(self) -> str | None:
        """Why writes fail or are about to, or None: free space on the database's disk, room
        under SQLite's page limit, and a write that recently found the storage full."""
        problems = []
        if self.engine.dialect.name == "sqlite":
            database = self.engine.url.database
            if database and database != ":memory:":
                free = shutil.disk_usage(Path(database).resolve().parent).free
                if free < MIN_FREE_BYTES:
                    problems.append(f"{free // 1024} KiB free on the database's disk")
            with self.engine.connect() as connection:
                pages, unused, limit = (
                    connection.exec_driver_sql(f"PRAGMA {name}").scalar_one()
                    for name in ("page_count", "freelist_count", "max_page_count")
                )
            if limit - pages + unused < MIN_FREE_PAGES:
                problems.append(f"the database is at its page limit ({pages} of {limit} pages)")
        with self._lock:
            full_at = self._full_at
        if full_at is not None and (problems or time.monotonic() - full_at < FULL_REPORTED_S):
            problems.append(
                f"a write found the database or its disk full {time.monotonic() - full_at:.0f} s ago"
            )
        return "; ".join(problems) or None

    def compact(self, tables: Sequence[str] = PERSONAL_TABLES) -> None:
        """Rewrite the storage so that deleted rows survive in no page at all (after erasure
        and pruning).

        SQLite: `secure_delete` zeroes deleted cells, but index pages can keep stale copies in
        their unused space (seen here), which only VACUUM removes; the write-ahead log is then
        emptied. About a second per few hundred MB, blocking writers meanwhile.
        PostgreSQL: a deleted row stays in its page as a dead tuple until vacuumed, and plain
        VACUUM only marks the space reusable; VACUUM FULL rewrites `tables` into new files. It
        locks each table while it runs: erasure is rare, and its promise needs it. What the
        write-ahead log, replicas and backups keep is the operator's retention to set."""
        if self.engine.dialect.name == "postgresql":
            with self.engine.connect().execution_options(
                isolation_level="AUTOCOMMIT"
            ) as connection:
                for table in tables:
                    connection.exec_driver_sql(f'VACUUM FULL "{table}"')
            return
        if self.engine.dialect.name != "sqlite":
            return
        # Idle pooled connections can pin an old snapshot and stop the checkpoint short.
        self.engine.dispose()
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.exec_driver_sql("VACUUM")
        for _ in range(50):
            with self.engine.connect() as connection:
                busy, _log, _done = connection.exec_driver_sql(
                    "PRAGMA wal_checkpoint(TRUNCATE)"
                ).one()
            if not busy:
                return
            time.sleep(0.1)
        raise RuntimeError("the database stayed busy: the write-ahead log was not checkpointed")

    def ping(self) -> bool:
        with self.engine.connect() as connection:
            return connection.exec_driver_sql("SELECT 1").scalar() == 1

    def dispose(self) -> None:
        self.engine.dispose()
