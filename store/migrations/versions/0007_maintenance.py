"""Table `maintenance`: one-time work on the stored data that a release runs once per database
(which of it has run, when, and what it found, naming no one): the sweep of rows older code
stored about people after their erasure (`agents.privacy.sweep`) is the first.

Revision ID: 0007_maintenance
Revises: 0006_wt_b
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import store.models

revision = "0007_maintenance"
down_revision = "0006_wt_b"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "maintenance",
        sa.Column("task", sa.String(length=64), nullable=False),
        sa.Column("done_at", store.models.UTCDateTime(), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("task"),
    )


def downgrade() -> None:
    op.drop_table("maintenance")
