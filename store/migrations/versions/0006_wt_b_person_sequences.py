"""What the item-item re-ranking reads of a history, maintained as events arrive: one row per
subject (`store.sequences`).

The table starts empty: each subject's row is built from their events when an event of theirs
next arrives; until then a decision reads their latest events as before.

Revision ID: 0006_wt_b
Revises: 0005_recent
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import store.models

revision = "0006_wt_b"
down_revision = "0006_wt_e"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "person_sequences",
        sa.Column("subject_key", sa.String(length=160), nullable=False),
        sa.Column("state", sa.JSON(), nullable=False),
        sa.Column("updated_at", store.models.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("subject_key"),
    )


def downgrade() -> None:
    op.drop_table("person_sequences")
