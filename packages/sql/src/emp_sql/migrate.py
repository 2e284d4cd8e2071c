"""Alembic, driven from Python: ``emp db upgrade``, tests and ``make dev`` call these.

The migrations live in ``migrations/`` at the repository root (packaged into the wheel as
``emp_sql/migrations``). They run on the caller's async engine through ``run_sync``, so they work
inside a running event loop as well as from a command.
"""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from emp_sql.session import create_engine
from emp_sql.settings import DatabaseSettings

logger = logging.getLogger(__name__)


def migrations_path() -> Path:
    """The Alembic script folder: packaged with the wheel, or the repository's in a checkout."""
    packaged = resources.files("emp_sql").joinpath("migrations")
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parents[4] / "migrations"


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_path()))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


async def _with_connection(settings: DatabaseSettings, action: str, revision: str) -> None:
    config = alembic_config(settings.database_url)

    def run(connection: Connection) -> None:
        # env.py uses this connection instead of opening its own event loop.
        config.attributes["connection"] = connection
        getattr(command, action)(config, revision)

    engine = create_engine(settings)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(run)
    finally:
        await engine.dispose()


async def upgrade(settings: DatabaseSettings, revision: str = "head") -> None:
    """Migrate the database up to ``revision`` (the newest by default)."""
    await _with_connection(settings, "upgrade", revision)


async def downgrade(settings: DatabaseSettings, revision: str = "base") -> None:
    """Migrate the database down to ``revision`` (an empty schema by default)."""
    await _with_connection(settings, "downgrade", revision)


async def current_revision(settings: DatabaseSettings) -> str | None:
    """The revision the database is at, or None before the first migration."""

    def read(connection: Connection) -> str | None:
        return MigrationContext.configure(connection).get_current_revision()

    engine = create_engine(settings)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(read)
    finally:
        await engine.dispose()


async def check_schema(settings: DatabaseSettings) -> None:
    """Refuse to start on a database whose schema is not this code's; start anyway (health
    says 503) when the database cannot be reached at all."""
    try:
        revision = await current_revision(settings)
    except (SQLAlchemyError, OSError) as exc:
        logger.warning("the database cannot be reached at start-up: %s", exc)
        return
    head = head_revision()
    if revision != head:
        raise RuntimeError(
            f"the database is at revision {revision or 'base'} and this code needs {head}: "
            "run `emp db upgrade`"
        )
