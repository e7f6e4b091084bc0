"""The schema's migrations (Alembic, `store/migrations/`), run when a `Database` opens.

The schema is created and upgraded by migrations only, on SQLite and PostgreSQL alike, never by
`create_all`: what runs in production is what the tests run. On PostgreSQL the upgrade holds a
transaction-level advisory lock, so several workers starting at once migrate once and the others
wait and find nothing to do. A database made before migrations existed (tables but no
`alembic_version`) is stamped at the first revision, whose schema it has, and upgraded from there.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
FIRST_REVISION = "0001"
# Any 64-bit number, the same in every worker: the key of the migration lock on PostgreSQL.
LOCK_KEY = 0x4174_7475_6E65  # "Attune"


def config(connection: Connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def head() -> str:
    """The newest revision the code knows."""
    revision = ScriptDirectory(str(MIGRATIONS)).get_current_head()
    if revision is None:  # pragma: no cover - the folder ships with its revisions
        raise RuntimeError(f"no migration found in {MIGRATIONS}")
    return revision


def current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine) -> None:
    """Bring the database's schema to the newest revision."""
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({LOCK_KEY})")
        if current(connection) == head():
            return
        cfg = config(connection)
        tables = set(inspect(connection).get_table_names())
        if current(connection) is None and "users" in tables:
            command.stamp(cfg, FIRST_REVISION)  # made by create_all before migrations existed
        command.upgrade(cfg, "head")
