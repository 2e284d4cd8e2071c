"""error patterns, their daily match counts, change history and fold tokens (ADR-009)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_AUTO_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_CATEGORIES = (
    "out_of_memory", "model_missing", "node_missing", "content_refused", "timeout", "network",
    "rate_limit", "auth", "invalid_input", "service_unavailable", "disk_full", "unknown",
)  # fmt: skip


def upgrade() -> None:
    op.create_table(
        "error_patterns",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("connector", sa.String(64), nullable=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("match_kind", sa.String(16), nullable=False),
        sa.Column("pattern", sa.Text(), nullable=False),
        sa.Column("case_sensitive", sa.Boolean(), nullable=False),
        sa.Column("category", sa.String(32), nullable=False),
        sa.Column("retryable", sa.Boolean(), nullable=False),
        sa.Column("retry_delay_s", sa.Float(), nullable=True),
        sa.Column("user_message", sa.Text(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("updated_by", sa.String(320), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "match_kind IN ('substring', 'regex')", name=op.f("ck_error_patterns_match_kind")
        ),
        sa.CheckConstraint(
            "category IN (" + ", ".join(f"'{c}'" for c in _CATEGORIES) + ")",
            name=op.f("ck_error_patterns_category"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_error_patterns")),
    )
    op.create_index(
        op.f("ix_error_patterns_connector"), "error_patterns", ["connector"], unique=False
    )
    op.create_table(
        "error_pattern_stats",
        sa.Column("pattern_id", sa.String(32), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("connector", sa.String(64), nullable=False),
        sa.Column("matches", sa.BigInteger(), nullable=False),
        sa.Column("last_matched_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["pattern_id"],
            ["error_patterns.id"],
            name=op.f("fk_error_pattern_stats_pattern_id_error_patterns"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "pattern_id", "day", "connector", name=op.f("pk_error_pattern_stats")
        ),
    )
    op.create_table(
        "error_pattern_changes",
        sa.Column("id", _AUTO_ID, autoincrement=True, nullable=False),
        sa.Column("pattern_id", sa.String(32), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("changed_by", sa.String(320), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("before", _JSON, nullable=True),
        sa.Column("after", _JSON, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_error_pattern_changes")),
    )
    op.create_index(
        op.f("ix_error_pattern_changes_pattern_id"), "error_pattern_changes", ["pattern_id"],
        unique=False,
    )  # fmt: skip
    op.create_table(
        "error_pattern_folds",
        sa.Column("token", sa.String(64), nullable=False),
        sa.Column("folded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("token", name=op.f("pk_error_pattern_folds")),
    )


def downgrade() -> None:
    op.drop_table("error_pattern_folds")
    op.drop_index(op.f("ix_error_pattern_changes_pattern_id"), table_name="error_pattern_changes")
    op.drop_table("error_pattern_changes")
    op.drop_table("error_pattern_stats")
    op.drop_index(op.f("ix_error_patterns_connector"), table_name="error_patterns")
    op.drop_table("error_patterns")
