"""Where the SQL database lives, read from ``EMP_DATABASE_URL``."""

from __future__ import annotations

from pydantic import SecretStr
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
    # The key ring that seals secrets stored in this database (webhook signing secrets):
    # KID:BASE64[,KID:BASE64...] from `emp env keygen`; the first seals, any opens. Required
    # with PostgreSQL; with SQLite, unset means a key file made beside the database file
    # (emp_sql.data_key). A secret: never logged, never in a URL.
    data_key: SecretStr | None = None
