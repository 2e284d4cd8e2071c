"""Where the SQL database lives, read from ``EMP_DATABASE_URL``."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict


class DatabaseSettings(BaseSettings):
    """The SQL store: SQLite by default (embedded, for ``make dev``), PostgreSQL in production.

    ``database_url`` is an async SQLAlchemy URL: ``sqlite+aiosqlite:///path`` or
    ``postgresql+psycopg://user@host/db``.
    """

    model_config = SettingsConfigDict(env_prefix="EMP_", env_file=".env", extra="ignore")

    database_url: str = "sqlite+aiosqlite:///.data/emp.db"
    # Echo every statement to the log; for debugging a query, never in production.
    database_echo: bool = False
    # Connections kept open per process (PostgreSQL); SQLite ignores it.
    database_pool_size: int = 10
