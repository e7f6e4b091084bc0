"""Predictions as features: churn risk and next-purchase probability per category, per person.

Revision ID: 0003_wt_c
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from store.models import UTCDateTime

revision = "0003_wt_c"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "predictions",
        sa.Column("user_id", sa.String(128), primary_key=True),
        sa.Column("churn_risk", sa.Float(), nullable=True),
        sa.Column("next_purchase", sa.JSON(), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("computed_at", UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("predictions")
