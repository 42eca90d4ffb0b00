"""drop ix_receipts_topic_id: ix_receipts_topic_created_id begins with the same column

Revision ID: 0011t
Revises: 0010r
Create Date: 2026-12-07 18:30:00.000000
"""

from alembic import op

revision = "0011t"
down_revision = "0010r"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Every lookup by topic (a topic key's receipts, a topic's cascade delete) reads the composite index
    # (topic_id, created_at, id); the single-column one was a second B-tree written on every push.
    op.drop_index("ix_receipts_topic_id", table_name="receipts")


def downgrade() -> None:
    op.create_index("ix_receipts_topic_id", "receipts", ["topic_id"], unique=False)
