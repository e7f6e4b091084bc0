"""The catalog's version: one row, bumped by every change to the items, their popularity or
their hidden marks, so that a process may keep what it read of the catalog until it moves
(`store.catalog.PopularCache`).

Revision ID: 0004_wt_d
Revises: 0003_wt_a
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_wt_d"
down_revision = "0003_wt_a"
branch_labels = None
depends_on = None


def upgrade() -> None:
    table = op.create_table(
        "catalog_version",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.bulk_insert(table, [{"id": 1, "version": 0}])


def downgrade() -> None:
    op.drop_table("catalog_version")
