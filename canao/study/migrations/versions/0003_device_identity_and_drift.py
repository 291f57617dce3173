"""Devices are identities: every artifact and measurement names the resolved device it was
built for and measured on; a study's sentinel re-timings (drift) are kept.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "canao_devices",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("identity", sa.Text, nullable=False),  # JSON of DeviceIdentity
        sa.Column("created", sa.Float, nullable=False),
    )
    # Rows written before identities existed keep NULL: their device was never resolved.
    with op.batch_alter_table("canao_artifacts") as b:
        b.add_column(sa.Column("device_key", sa.String(64), nullable=True))
    with op.batch_alter_table("canao_measurements") as b:
        b.add_column(sa.Column("device_key", sa.String(64), nullable=True))
    op.create_table(
        "canao_drift",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("study_name", sa.String(512), nullable=False, index=True),
        sa.Column("device_key", sa.String(64), nullable=False),
        sa.Column("finished_trials", sa.Integer, nullable=False),
        sa.Column("median_ms", sa.Float, nullable=False),
        sa.Column("ratio", sa.Float, nullable=False),  # to the study's first sentinel timing
        sa.Column("samples_ms", sa.Text, nullable=False),
        sa.Column("created", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("canao_drift")
    with op.batch_alter_table("canao_measurements") as b:
        b.drop_column("device_key")
    with op.batch_alter_table("canao_artifacts") as b:
        b.drop_column("device_key")
    op.drop_table("canao_devices")
