"""Chat memory: LangGraph's checkpointer — SQLite on the embedded defaults, PostgreSQL when the
store is on PostgreSQL (so that several workers share the threads) — with every thread
namespaced by its subject.

A thread's key is `<subject key>|<thread id>`. The subject comes from the request (never from
the model or the thread id, which cannot hold a `|`), so the same thread id sent for another
person opens that person's own, fresh thread: one person's conversation cannot be resumed by
anyone else. Erasure deletes every thread under a person's subject keys, then rewrites the
storage so that the deleted rows survive nowhere (as `store.db.Database.compact` does: VACUUM on
SQLite, VACUUM FULL of the checkpoint tables on PostgreSQL).

`Chat` is the chat graph compiled over these checkpoints, as the process holds it.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.graph.state import CompiledStateGraph

from agents.chat.tools import CatalogNames

SEPARATOR = "|"
THREAD_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def thread_key(subject_key: str, thread_id: str) -> str:
    """The checkpointer's thread id for a subject's thread."""
    if not THREAD_ID.fullmatch(thread_id):
        raise ValueError(
            "a thread id is 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit"
        )
    return f"{subject_key}{SEPARATOR}{thread_id}"


class Checkpoints:
    """The checkpoint database (one file, WAL mode, `secure_delete` on) and its eraser."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        connection = sqlite3.connect(str(path), check_same_thread=False)
        connection.execute("PRAGMA secure_delete=ON")
        self.saver = SqliteSaver(connection)
        self.saver.setup()

    def threads(self, subject_key: str) -> list[str]:
        """The thread ids (without the namespace) held for a subject."""
        prefix = subject_key + SEPARATOR
        with self.saver.cursor(transaction=False) as cursor:
            rows = cursor.execute(
                "SELECT DISTINCT thread_id FROM checkpoints WHERE substr(thread_id, 1, ?) = ?",
                (len(prefix), prefix),
            ).fetchall()
        return sorted(row[0][len(prefix) :] for row in rows)

    def erase(self, subject_keys: Iterable[str]) -> int:
        """Delete every thread of these subjects; returns how many threads were deleted."""
        deleted: set[str] = set()
        with self.saver.cursor() as cursor:
            for key in subject_keys:
                prefix = key + SEPARATOR
                for table in ("checkpoints", "writes"):
                    rows = cursor.execute(
                        f"SELECT DISTINCT thread_id FROM {table} WHERE substr(thread_id, 1, ?) = ?",
                        (len(prefix), prefix),
                    ).fetchall()
                    deleted |= {row[0] for row in rows}
                    cursor.execute(
                        f"DELETE FROM {table} WHERE substr(thread_id, 1, ?) = ?",
                        (len(prefix), prefix),
                    )
        if deleted:
            self._compact()
        return len(deleted)

    def _compact(self) -> None:
        # `secure_delete` zeroes the deleted cells; VACUUM and a truncating checkpoint of the
        # write-ahead log remove the stale copies that index pages and the log can still hold.
        with self.saver.lock:
            self.saver.conn.execute("VACUUM")
            self.saver.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self) -> None:
        with self.saver.lock:
            self.saver.conn.close()


class PostgresCheckpoints:
    """The checkpoint tables in PostgreSQL (LangGraph's `PostgresSaver` over a connection pool)
    and their eraser; the same interface as `Checkpoints`."""

    TABLES = ("checkpoints", "checkpoint_blobs", "checkpoint_writes")

    def __init__(self, url: str, *, max_size: int = 8) -> None:
        from langgraph.checkpoint.postgres import PostgresSaver
        from psycopg.rows import dict_row
        from psycopg_pool import ConnectionPool

        self.url = libpq_url(url)
        self.pool: ConnectionPool[Any] = ConnectionPool(
            self.url,
            min_size=1,
            max_size=max_size,
            kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row},
            open=True,
        )
        self.saver = PostgresSaver(self.pool)
        self.saver.setup()

    def threads(self, subject_key: str) -> list[str]:
        prefix = subject_key + SEPARATOR
        with self.pool.connection() as connection:
            rows = connection.execute(
                "SELECT DISTINCT thread_id FROM checkpoints WHERE left(thread_id, %s) = %s",
                (len(prefix), prefix),
            ).fetchall()
        return sorted(row["thread_id"][len(prefix) :] for row in rows)

    def erase(self, subject_keys: Iterable[str]) -> int:
        deleted: set[str] = set()
        with self.pool.connection() as connection, connection.transaction():
            for key in subject_keys:
                prefix = key + SEPARATOR
                for table in self.TABLES:
                    rows = connection.execute(
                        f"DELETE FROM {table} WHERE left(thread_id, %s) = %s RETURNING thread_id",
                        (len(prefix), prefix),
                    ).fetchall()
                    deleted |= {row["thread_id"] for row in rows}
        if deleted:
            with self.pool.connection() as connection:
                for table in self.TABLES:
                    connection.execute(f"VACUUM FULL {table}")
        return len(deleted)

    def close(self) -> None:
        self.pool.close()


def libpq_url(url: str) -> str:
    """A SQLAlchemy PostgreSQL URL (`postgresql+psycopg://…`) as libpq reads it."""
    scheme, rest = url.split("://", 1)
    return f"postgresql://{rest}" if scheme.startswith("postgresql") else url


class Chat:
    """The chat graph compiled over its checkpoints, and the catalog names its guard reads; one
    per process, built by the factory."""

    def __init__(
        self,
        checkpoints: Checkpoints | PostgresCheckpoints,
        graph: CompiledStateGraph[Any, Any, Any, Any],
    ) -> None:
        self.checkpoints = checkpoints
        self.graph = graph
        self.catalog = CatalogNames()

    def erase(self, subject_keys: list[str]) -> int:
        """The eraser of `Services.erasers`: every thread of these subjects; how many."""
        return self.checkpoints.erase(subject_keys)

    def close(self) -> None:
        self.checkpoints.close()
