"""Measurements say on which device they were taken, whether they were reused, and the
accuracy they went with.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Rows written by the first schema were local, fresh measurements; their accuracy was
    # kept only in the Optuna trial (-1 marks "not recorded here").
    with op.batch_alter_table("canao_measurements") as b:
        b.add_column(sa.Column("device", sa.String(256), nullable=False, server_default="local"))
        b.add_column(sa.Column("cache_hit", sa.Boolean, nullable=False,
                               server_default=sa.false()))
        b.add_column(sa.Column("accuracy", sa.Float, nullable=False, server_default="-1"))


def downgrade() -> None:
    with op.batch_alter_table("canao_measurements") as b:
        b.drop_column("accuracy")
        b.drop_column("cache_hit")
        b.drop_column("device")
