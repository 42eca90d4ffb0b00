"""instapush events

Revision ID: 0008i
Revises: 0005
Create Date: 2026-12-04 19:10:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0008i"
down_revision = "0007p"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "instapush_events",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("topic_id", sa.String(length=36), nullable=False),
        sa.Column("title", sa.String(length=64), nullable=False),
        sa.Column("trackers", sa.JSON(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["topic_id"], ["topics.id"], name=op.f("fk_instapush_events_topic_id_topics"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_instapush_events")),
        sa.UniqueConstraint("topic_id", "title", name="uq_instapush_events_topic_title"),
    )


def downgrade() -> None:
    op.drop_table("instapush_events")
