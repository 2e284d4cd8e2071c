"""Migrations up and down on SQLite and PostgreSQL, and no drift between them and the models."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from api_helpers import postgres_database
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from emp_sql import DatabaseSettings, migrate
from emp_sql.session import create_engine

TABLES = {
    "users", "api_tokens", "job_archive", "alembic_version", "error_patterns",
    "error_pattern_stats", "error_pattern_changes", "error_pattern_folds", "webhook_endpoints",
    "webhook_deliveries", "webhook_attempts", "flat_file", "operator_actions",
}  # fmt: skip


async def _tables(settings: DatabaseSettings) -> set[str]:
    engine = create_engine(settings)
    try:
        async with engine.connect() as conn:
            return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
    finally:
        await engine.dispose()


async def _no_drift(settings: DatabaseSettings) -> None:
    """`alembic check`: autogenerate finds nothing the migrations lack."""
    config = migrate.alembic_config(settings.database_url)

    def check(connection: Connection) -> None:
        config.attributes["connection"] = connection
        command.check(config)

    engine = create_engine(settings)
    try:
        async with engine.connect() as conn:
            await conn.run_sync(check)
    finally:
        await engine.dispose()


async def _round_trip(settings: DatabaseSettings) -> None:
    await migrate.upgrade(settings)
    assert await migrate.current_revision(settings) == migrate.head_revision()
    assert await _tables(settings) == TABLES
    await _no_drift(settings)
    await migrate.downgrade(settings, "base")
    assert await migrate.current_revision(settings) is None
    assert await _tables(settings) == {"alembic_version"}
    await migrate.upgrade(settings)
    assert await _tables(settings) == TABLES


async def test_sqlite_up_and_down(tmp_path: Path) -> None:
    await _round_trip(DatabaseSettings(database_url=f"sqlite+aiosqlite:///{tmp_path}/a/emp.db"))


async def test_postgres_up_and_down() -> None:
    with postgres_database() as url:
        await _round_trip(DatabaseSettings(database_url=url))
