"""Features maintained as events arrive: one row per subject (`store.features`).

The table starts empty: each subject's row is built from their events the first time a decision
reads it or an event of theirs arrives.

Revision ID: 0003_wt_a
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import store.models

revision = "0003_wt_a"
down_revision = "0003_wt_b"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "person_features",
        sa.Column("subject_key", sa.String(length=160), nullable=False),
        sa.Column("state", sa.JSON(), nullable=False),
        sa.Column("updated_at", store.models.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("subject_key"),
    )


def downgrade() -> None:
    op.drop_table("person_features")
