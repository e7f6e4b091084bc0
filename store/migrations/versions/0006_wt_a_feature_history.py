"""A person's feature row in two parts: `state`, what a decision reads (bounded whatever the
history: counts, sums, the last 31 days' times, the recent purchases, the price band), and
`history`, every purchase and the prices' multiset, read only when needed (`store.features`).

Rows of the earlier version hold no `history`: they are rebuilt from the events the first time
they are read or an event of theirs arrives (`store.features.STATE_VERSION`).

Revision ID: 0006_wt_a
Revises: 0005_recent
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_wt_a"
down_revision = "0005_recent"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("person_features") as batch:
        batch.add_column(sa.Column("history", sa.JSON(), nullable=True))


def downgrade() -> None:
    # The rows of this version would not load in the earlier code: they are derived, so drop
    # them and let the earlier code rebuild them.
    op.execute("DELETE FROM person_features")
    with op.batch_alter_table("person_features") as batch:
        batch.drop_column("history")
