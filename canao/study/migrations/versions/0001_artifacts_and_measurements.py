"""The first schema: compiled artifacts and their measurements.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "canao_artifacts",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("arch", sa.Text, nullable=False),
        sa.Column("compression", sa.Text, nullable=False),
        sa.Column("target_profile", sa.String(256), nullable=False),
        sa.Column("target", sa.Text, nullable=False),
        sa.Column("tvm_version", sa.String(64), nullable=False),
        sa.Column("tuning_digest", sa.String(64)),
        sa.Column("param_bytes", sa.BigInteger, nullable=False),
        sa.Column("workspace_bytes", sa.BigInteger, nullable=False),
        sa.Column("library_bytes", sa.BigInteger, nullable=False),
        sa.Column("created", sa.Float, nullable=False),
    )
    # One row per artifact folder: studies with other artifact folders build their own.
    op.create_index("ix_canao_artifacts_key_path", "canao_artifacts", ["key", "path"], unique=True)
    op.create_table(
        "canao_measurements",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("trial_id", sa.Integer, nullable=False),
        sa.Column("study_name", sa.String(512), nullable=False),
        sa.Column("trial_number", sa.Integer, nullable=False),
        sa.Column("artifact_id", sa.Integer, sa.ForeignKey("canao_artifacts.id"), nullable=False),
        sa.Column("fidelity", sa.String(64), nullable=False),
        sa.Column("median_ms", sa.Float, nullable=False),
        sa.Column("p95_ms", sa.Float, nullable=False),
        sa.Column("samples_ms", sa.Text, nullable=False),
        sa.Column("rejected_samples_ms", sa.Text, nullable=False),
        sa.Column("noisy", sa.Boolean, nullable=False),
        sa.Column("machine", sa.Text, nullable=False),
        sa.Column("created", sa.Float, nullable=False),
    )
    op.create_index("ix_canao_measurements_trial_id", "canao_measurements", ["trial_id"])
    op.create_index("ix_canao_measurements_study_name", "canao_measurements", ["study_name"])


def downgrade() -> None:
    op.drop_table("canao_measurements")
    op.drop_table("canao_artifacts")
