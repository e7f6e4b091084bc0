"""Alembic's environment: migrations run on the connection `store.db.Database` hands over.

The schema is created and upgraded only by these migrations, on SQLite and PostgreSQL alike;
`Database` runs them at start (under an advisory lock on PostgreSQL, so that several workers
starting at once migrate once). `render_as_batch` lets SQLite alter tables by copy.
"""

from __future__ import annotations

from alembic import context

from store.models import Base

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only Attune's own runner calls this environment
    raise RuntimeError(
        "store/migrations runs through store.db.Database (attune serve or `attune db upgrade`); "
        "it needs the connection passed in Config.attributes['connection']"
    )

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
