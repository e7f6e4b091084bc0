"""Engine and session setup: the only place that knows which database is behind the store."""

from __future__ import annotations

import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.orm import Session, sessionmaker

from store.errors import StorageFull
from store.migrate import upgrade

# /healthz reports storage as failing below these margins, before a write has to fail.
MIN_FREE_BYTES = 8 * 1024 * 1024  # on the database's file system
MIN_FREE_PAGES = 16  # under SQLite's `max_page_count`
# After a write found the storage full, /healthz reports it for this long unless a write
# succeeds first; once the margins above hold again and this has passed, it reports healthy.
FULL_REPORTED_S = 5.0
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
    "predictions",
    "rank_events",
    "batch_results",
)


def make_engine(url: str) -> Engine:
    """An engine for `url`; SQLite files get WAL and a busy timeout so several workers can share them."""
    if url.startswith("sqlite"):
        database = url.split("///", 1)[-1]
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
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
        with self._lock:
            self._full_at = None  # a write went through: there is room again

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
