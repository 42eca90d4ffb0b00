"""pending broadcasts: a message's MQTT broadcast is marked until settled, not a delivery row per push

Revision ID: 0009b
Revises: 0008i
Create Date: 2026-12-07 14:30:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0009b"
down_revision = "0008i"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Delivery rows of earlier versions stay as they are: the outbox works both.
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


def downgrade() -> None:
    # Broadcasts still marked become the pending delivery rows earlier versions work.
    op.execute(
        "INSERT INTO deliveries (message_id, channel, target, event, state, attempts, next_attempt_at,"
        " created_at, updated_at)"
        " SELECT b.message_id, b.channel, '', '', 'pending', 0, m.created_at, m.created_at, m.created_at"
        " FROM pending_broadcasts b JOIN messages m ON m.id = b.message_id"
    )
    op.drop_table("pending_broadcasts")
