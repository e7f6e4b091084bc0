"""The schema comes from Alembic's migrations on both dialects, and they agree with the models."""

from __future__ import annotations

import threading
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from postgres import create_database
from sqlalchemy import create_engine, inspect, text

from store.db import Database
from store.migrate import FIRST_REVISION, config, current, head
from store.models import Base


def _differences(url: str) -> list[object]:
    engine = create_engine(url)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        found = compare_metadata(context, Base.metadata)
    engine.dispose()
    return list(found)


def test_migrations_build_the_schema_of_the_models(database_url: str) -> None:
    """A model changed without a migration shows up here as a difference."""
    db = Database(database_url)
    with db.engine.connect() as connection:
        assert current(connection) == head()
        tables = set(inspect(connection).get_table_names())
    assert set(Base.metadata.tables) <= tables
    assert _differences(database_url) == []
    db.dispose()


def test_opening_again_is_a_no_op(database_url: str) -> None:
    Database(database_url).dispose()
    db = Database(database_url)
    with db.engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1
    db.dispose()


def test_a_database_from_before_migrations_is_adopted(tmp_path: Path) -> None:
    """Tables made by `create_all` and no version table: stamped at the first revision, kept.

    Such a database has the schema of the first revision (what `create_all` made before
    migrations existed), built here from that revision, its version table then dropped."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    with engine.begin() as connection:
        command.upgrade(config(connection), FIRST_REVISION)
        connection.execute(text("DROP TABLE alembic_version"))
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO users (user_id, profile, created_at, updated_at) "
                "VALUES ('u1', '{}', '2026-01-01', '2026-01-01')"
            )
        )
    engine.dispose()
    db = Database(url)
    with db.engine.connect() as connection:
        assert current(connection) == head()
        assert connection.execute(text("SELECT user_id FROM users")).scalars().all() == ["u1"]
    assert head() >= FIRST_REVISION
    db.dispose()


def test_workers_starting_together_on_postgresql_migrate_once(postgres: str) -> None:
    """Several workers share PostgreSQL (the embedded SQLite store has one): the advisory lock
    lets one migrate while the others wait."""
    database_url = create_database(postgres, "workers_together")
    errors: list[BaseException] = []

    def start() -> None:
        try:
            Database(database_url).dispose()
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert _differences(database_url) == []
