"""operations: the archived event stream of a job, and the operator actions' audit (issue 17)

Revision ID: 0006_operations
Revises: 0005_users_disabled
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006_operations"
down_revision: str | None = "0005_users_disabled"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("job_archive") as batch:
        batch.add_column(sa.Column("events", _JSON, nullable=True))
    op.create_table(
        "operator_actions",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor_id", sa.String(32), nullable=False),
        sa.Column("actor_email", sa.String(320), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("job_id", sa.String(64), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("params", _JSON, nullable=False),
        sa.Column("touched", sa.BigInteger(), nullable=False),
        sa.Column("dry_run", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_operator_actions")),
    )
    op.create_index(op.f("ix_operator_actions_at"), "operator_actions", ["at"])
    op.create_index(op.f("ix_operator_actions_job_id"), "operator_actions", ["job_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_operator_actions_job_id"), table_name="operator_actions")
    op.drop_index(op.f("ix_operator_actions_at"), table_name="operator_actions")
    op.drop_table("operator_actions")
    with op.batch_alter_table("job_archive") as batch:
        batch.drop_column("events")
