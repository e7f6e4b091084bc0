"""Engine and session setup: the only place that knows which database is behind the store."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from store.models import Base


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


class Database:
    """An engine, its schema and a session factory."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        Base.metadata.create_all(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session in one transaction: committed on success, rolled back on any error."""
        with self._sessions.begin() as session:
            yield session

    def compact(self) -> None:
        """Rewrite SQLite's file and empty its write-ahead log, so that erased rows survive in
        no page at all: `secure_delete` zeroes deleted cells, but index pages can keep stale
        copies in their unused space (seen here), which only VACUUM removes. It takes about a
        second per few hundred MB and blocks writers meanwhile: it runs after erasures only."""
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
