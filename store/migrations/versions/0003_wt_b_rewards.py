"""Attribution windows, attributed events and the sources of rewards.

Revision ID: 0003_wt_b
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from store.models import UTCDateTime

revision = "0003_wt_b"
down_revision = "0003_wt_e"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reward_windows",
        sa.Column(
            "decision_id",
            sa.String(64),
            sa.ForeignKey("decisions.decision_id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("subject_key", sa.String(160), nullable=False),
        sa.Column("opened_at", UTCDateTime(), nullable=False),
        sa.Column("closes_at", UTCDateTime(), nullable=False),
        sa.Column("offer_id", sa.String(128), nullable=True),
        sa.Column("item_ids", sa.JSON(), nullable=False),
        sa.Column("default_reward", sa.Float(), nullable=False),
    )
    op.create_index("ix_reward_windows_subject_key", "reward_windows", ["subject_key"])
    op.create_index("ix_reward_windows_closes_at", "reward_windows", ["closes_at"])
    op.create_table(
        "attributions",
        sa.Column(
            "event_id",
            sa.String(128),
            sa.ForeignKey("events.event_id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column(
            "decision_id",
            sa.String(64),
            sa.ForeignKey("decisions.decision_id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("ts", UTCDateTime(), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("reward", sa.Float(), nullable=False),
        sa.Column("explicit", sa.Boolean(), nullable=False),
    )
    op.create_index("ix_attributions_decision_id", "attributions", ["decision_id"])
    op.create_table(
        "reward_sources",
        sa.Column(
            "decision_id",
            sa.String(64),
            sa.ForeignKey("decisions.decision_id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("event_ids", sa.JSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("reward_sources")
    op.drop_index("ix_attributions_decision_id", table_name="attributions")
    op.drop_table("attributions")
    op.drop_index("ix_reward_windows_closes_at", table_name="reward_windows")
    op.drop_index("ix_reward_windows_subject_key", table_name="reward_windows")
    op.drop_table("reward_windows")
