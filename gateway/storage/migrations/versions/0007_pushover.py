"""pushover: emergency receipts and attachments

Revision ID: 0007p
Revises: 0005
Create Date: 2026-12-04 19:10:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0007p"
down_revision = "0006e"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "attachments",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("content_type", sa.String(length=100), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_attachments")),
    )
    op.create_table(
        "pushover_receipts",
        sa.Column("id", sa.String(length=30), nullable=False),
        sa.Column("message_id", sa.String(length=36), nullable=False),
        sa.Column("topic_id", sa.String(length=36), nullable=False),
        sa.Column("retry", sa.Integer(), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("next_send_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_delivered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("acknowledged_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("acknowledged_by", sa.String(length=100), nullable=False),
        sa.Column("acknowledged_by_device", sa.String(length=100), nullable=False),
        sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name=op.f("fk_pushover_receipts_message_id_messages"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["topic_id"], ["topics.id"], name=op.f("fk_pushover_receipts_topic_id_topics"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pushover_receipts")),
        sa.UniqueConstraint("message_id", name=op.f("uq_pushover_receipts_message_id")),
    )
    with op.batch_alter_table("pushover_receipts", schema=None) as batch_op:
        batch_op.create_index("ix_pushover_receipts_next_send_at", ["next_send_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_pushover_receipts_topic_id"), ["topic_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("pushover_receipts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_pushover_receipts_topic_id"))
        batch_op.drop_index("ix_pushover_receipts_next_send_at")
    op.drop_table("pushover_receipts")
    op.drop_table("attachments")
