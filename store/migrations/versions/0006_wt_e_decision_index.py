"""The decisions' index on the subject alone goes: `ix_decisions_subject_time` (subject, time;
migration 0005) serves every read by subject as well, and each logged decision paid for
maintaining both (about 13% of the CPU of a decision's INSERT and commit on SQLite).

Revision ID: 0006_wt_e
Revises: 0005_recent
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0006_wt_e"
down_revision = "0006_wt_a"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_decisions_subject_key", table_name="decisions")


def downgrade() -> None:
    op.create_index("ix_decisions_subject_key", "decisions", ["subject_key"])
