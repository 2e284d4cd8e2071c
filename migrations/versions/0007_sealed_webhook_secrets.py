"""sealed webhook secrets: room for sealed:v1:<kid>:<base64url> in both secret columns

The migration cannot seal (it has no key, by design: the key stays out of the database and of
the migration's process); every API process seals the remaining plaintext rows when it starts
(``emp_sql.webhook_secrets.seal_stored``).

Revision ID: 0007_sealed_webhook_secrets
Revises: 0006_operations
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_sealed_webhook_secrets"
down_revision: str | None = "0006_operations"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _resize(old: int, new: int) -> None:
    with op.batch_alter_table("webhook_endpoints") as batch:
        for column, nullable in (("secret", False), ("previous_secret", True)):
            batch.alter_column(
                column, existing_type=sa.String(old), type_=sa.String(new),
                existing_nullable=nullable,
            )  # fmt: skip


def upgrade() -> None:
    _resize(128, 256)


def downgrade() -> None:
    # Sealed values are longer than 128 characters: a downgrade of a database that holds them
    # fails on PostgreSQL rather than truncate them (the old code could not open them anyway).
    _resize(256, 128)
