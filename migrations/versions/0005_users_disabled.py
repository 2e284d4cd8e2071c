"""users.disabled_at: an admin can disable a user (sign-in, sessions and tokens end) (issue 12)

Revision ID: 0005_users_disabled
Revises: 0004_flat_file
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_users_disabled"
down_revision: str | None = "0004_flat_file"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("users", sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("disabled_at")
