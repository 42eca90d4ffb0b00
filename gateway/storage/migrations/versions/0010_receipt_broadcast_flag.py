"""a message's pending broadcast is a flag on its receipt, not a row of pending_broadcasts

Revision ID: 0010r
Revises: 0009b
Create Date: 2026-12-07 17:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0010r"
down_revision = "0009b"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("receipts") as batch:
        batch.add_column(
            sa.Column("broadcast_pending", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
    op.create_index(
        "ix_receipts_broadcast_pending",
        "receipts",
        ["message_id"],
        sqlite_where=sa.text("broadcast_pending = 1"),
        postgresql_where=sa.text("broadcast_pending"),
    )
    # Broadcasts still marked keep their place: the receipt is flagged instead.
    op.execute(
        "UPDATE receipts SET broadcast_pending = true"
        " WHERE message_id IN (SELECT message_id FROM pending_broadcasts)"
    )
    op.drop_table("pending_broadcasts")


def downgrade() -> None:
    op.create_table(
        "pending_broadcasts",
        sa.Column("message_id", sa.String(length=36), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name=op.f("fk_pending_broadcasts_message_id_messages"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("message_id", "channel", name=op.f("pk_pending_broadcasts")),
    )
    # The one broadcast channel there is, MQTT, gets the marker of each flagged receipt.
    op.execute(
        "INSERT INTO pending_broadcasts (message_id, channel)"
        " SELECT message_id, 'mqtt' FROM receipts WHERE broadcast_pending"
    )
    op.drop_index("ix_receipts_broadcast_pending", table_name="receipts")
    with op.batch_alter_table("receipts") as batch:
        batch.drop_column("broadcast_pending")
