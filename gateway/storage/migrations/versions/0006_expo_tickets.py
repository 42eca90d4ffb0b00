"""expo tickets: pending Expo receipt checks

Revision ID: 0006e
Revises: 0005
Create Date: 2026-12-04 19:10:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0006e"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "expo_tickets",
        sa.Column("delivery_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("ticket_id", sa.String(length=64), nullable=False),
        sa.Column("device_id", sa.String(length=36), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("check_after", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["deliveries.id"],
            name=op.f("fk_expo_tickets_delivery_id_deliveries"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("delivery_id", name=op.f("pk_expo_tickets")),
    )
    with op.batch_alter_table("expo_tickets", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_expo_tickets_sent_at"), ["sent_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("expo_tickets", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_expo_tickets_sent_at"))
    op.drop_table("expo_tickets")
