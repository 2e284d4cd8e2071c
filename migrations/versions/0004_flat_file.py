"""flat_file: uploaded LoRAs (ADR-010)

Revision ID: 0004_flat_file
Revises: 0003_webhooks
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_flat_file"
down_revision: str | None = "0003_webhooks"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "flat_file",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("owner_id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("blob_path", sa.String(1024), nullable=False),
        sa.Column("shared", sa.Boolean(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("kind IN ('lora')", name=op.f("ck_flat_file_kind")),
        sa.CheckConstraint("size >= 0", name=op.f("ck_flat_file_size")),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["users.id"], name=op.f("fk_flat_file_owner_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_flat_file")),
    )
    op.create_index(op.f("ix_flat_file_owner_id"), "flat_file", ["owner_id"], unique=False)
    op.create_index(
        "uq_flat_file_owner_sha256_live",
        "flat_file",
        ["owner_id", "kind", "sha256"],
        unique=True,
        sqlite_where=sa.text("deleted_at IS NULL"),
        postgresql_where=sa.text("deleted_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("uq_flat_file_owner_sha256_live", table_name="flat_file")
    op.drop_index(op.f("ix_flat_file_owner_id"), table_name="flat_file")
    op.drop_table("flat_file")
