"""SQL: users, API tokens and the archive of finished jobs (SQLAlchemy 2, async).

SQLite by default (``EMP_DATABASE_URL``), PostgreSQL in production; the schema is built by the
Alembic migrations in ``migrations/`` (``emp db upgrade``), never by ``create_all``.
"""

from emp_sql.job_archive import JobArchiveRepository, archive_row
from emp_sql.models import ApiToken, ArchivedJob, Base, Role, User
from emp_sql.session import Database
from emp_sql.settings import DatabaseSettings
from emp_sql.tokens import IssuedToken, TokenRepository, hash_token
from emp_sql.users import UserRepository

__all__ = [
    "ApiToken",
    "ArchivedJob",
    "Base",
    "Database",
    "DatabaseSettings",
    "IssuedToken",
    "JobArchiveRepository",
    "Role",
    "TokenRepository",
    "User",
    "UserRepository",
    "archive_row",
    "hash_token",
]
