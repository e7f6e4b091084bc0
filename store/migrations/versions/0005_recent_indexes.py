"""Indexes that keep a decision's reads bounded by what they return, not by the history: a
person's latest events by (user id | anonymous id, time), and the decisions shown to a person
by (subject, time).

Revision ID: 0005_recent
Revises: 0004_wt_d
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0005_recent"
down_revision = "0004_wt_d"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_events_user_recent", "events", ["user_id", "ts", "event_id"])
    op.create_index("ix_events_anonymous_recent", "events", ["anonymous_id", "ts", "event_id"])
    op.create_index("ix_decisions_subject_time", "decisions", ["subject_key", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_decisions_subject_time", table_name="decisions")
    op.drop_index("ix_events_anonymous_recent", table_name="events")
    op.drop_index("ix_events_user_recent", table_name="events")
