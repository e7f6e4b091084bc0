"""Rank events and rewards by event id, hidden catalog items, batch recommendation results.

Revision ID: 0003_wt_e
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import store.models

revision = "0003_wt_e"
down_revision = "0003_wt_c"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rank_events",
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=128), nullable=True),
        sa.Column("policy", sa.String(length=32), nullable=False),
        sa.Column("slots", sa.JSON(), nullable=False),
        sa.Column("activated", sa.Boolean(), nullable=False),
        sa.Column("created_at", store.models.UTCDateTime(), nullable=False),
        sa.Column("expires_at", store.models.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("event_id"),
    )
    op.create_index("ix_rank_events_user_id", "rank_events", ["user_id"])
    op.create_index("ix_rank_events_expires_at", "rank_events", ["expires_at"])
    op.create_table(
        "hidden_items",
        sa.Column("item_id", sa.String(length=128), nullable=False),
        sa.Column("hidden_at", store.models.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("item_id"),
    )
    op.create_table(
        "batch_results",
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.String(length=128), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("job_id", "position"),
    )
    op.create_index("ix_batch_results_user_id", "batch_results", ["user_id"])


def downgrade() -> None:
    op.drop_index("ix_batch_results_user_id", table_name="batch_results")
    op.drop_table("batch_results")
    op.drop_table("hidden_items")
    op.drop_index("ix_rank_events_expires_at", table_name="rank_events")
    op.drop_index("ix_rank_events_user_id", table_name="rank_events")
    op.drop_table("rank_events")
