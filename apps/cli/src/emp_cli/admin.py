"""``emp users``, ``emp tokens`` and ``emp db``: the SQL side of the command line.

A new token is printed once, alone on stdout (so ``TOKEN=$(emp tokens create --email …)``
works); everything else goes to stderr. The database is ``EMP_DATABASE_URL`` unless
``--database-url`` names another.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer
from rich.table import Column, Table
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from emp_cli.output import err, error, out
from emp_core.errors import EmpError, NotFound
from emp_core.redis.client import connect
from emp_core.settings import QueueSettings
from emp_sql import migrate
from emp_sql.models import Role, User
from emp_sql.revocations import Revocation, publish
from emp_sql.session import Database
from emp_sql.settings import DatabaseSettings
from emp_sql.tokens import TokenRepository
from emp_sql.users import UserRepository

users_app = typer.Typer(help="Users of the API.", no_args_is_help=True)
tokens_app = typer.Typer(help="API tokens (shown once, stored hashed).", no_args_is_help=True)
db_app = typer.Typer(help="The SQL database and its migrations.", no_args_is_help=True)

T = TypeVar("T")

DatabaseUrl = Annotated[
    str | None, typer.Option(help="Database URL (default: EMP_DATABASE_URL).", show_default=False)
]
Email = Annotated[str, typer.Option(help="The user's email address.")]


def _settings(database_url: str | None) -> DatabaseSettings:
    return DatabaseSettings(database_url=database_url) if database_url else DatabaseSettings()


def _run(coro: Awaitable[T], settings: DatabaseSettings) -> T:
    """Run one command's coroutine; print domain and connection errors as one line."""

    async def main() -> T:
        return await coro

    try:
        return asyncio.run(main())
    except EmpError as exc:
        error(exc.message)
        raise typer.Exit(2) from None
    except OperationalError as exc:
        first = str(exc.orig or exc).splitlines()[0]
        error(f"cannot use the database {settings.database_url}: {first}")
        raise typer.Exit(3) from None


def _with_db(settings: DatabaseSettings, body: Callable[[Database], Awaitable[T]]) -> T:
    async def main() -> T:
        database = Database(settings)
        try:
            return await body(database)
        finally:
            await database.dispose()

    return _run(main(), settings)


async def _user(users: UserRepository, email: str) -> User:
    user = await users.by_email(email)
    if user is None:
        raise NotFound(f"no user has the email {email}", field="email")
    return user


@users_app.command("create")
def users_create(
    email: Email,
    admin: Annotated[bool, typer.Option("--admin", help="Give the user the admin role.")] = False,
    password: Annotated[
        str | None,
        typer.Option(envvar="EMP_PASSWORD", help="Password (default: prompt).", show_default=False),
    ] = None,
    token: Annotated[bool, typer.Option(help="Also issue an API token and print it.")] = True,
    database_url: DatabaseUrl = None,
) -> None:
    """Create a user (and a first API token, printed once)."""
    if password is None:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    role = Role.ADMIN if admin else Role.USER

    async def body(db: Database) -> str | None:
        async with db.session() as session:
            user = await UserRepository(session).create(email, password, role=role)
            issued = await TokenRepository(session).issue(user, "created with the user")
        err.print(f"created {role.value} {user.email} (id {user.id})")
        return issued.secret if token else None

    secret = _with_db(_settings(database_url), body)
    if secret:
        err.print("its API token (shown once; keep it secret):")
        typer.echo(secret)


@users_app.command("list")
def users_list(database_url: DatabaseUrl = None) -> None:
    """List users."""

    async def body(db: Database) -> list[User]:
        async with db.session() as session:
            return list((await session.execute(select(User).order_by(User.created_at))).scalars())

    table = Table("id", "email", "role", "created")
    for user in _with_db(_settings(database_url), body):
        table.add_row(user.id, user.email, user.role, f"{user.created_at:%Y-%m-%d %H:%M}")
    out.print(table)


@tokens_app.command("create")
def tokens_create(
    email: Email,
    name: Annotated[str, typer.Option(help="What the token is for.")] = "",
    database_url: DatabaseUrl = None,
) -> None:
    """Issue an API token for a user and print it, once."""

    async def body(db: Database) -> str:
        async with db.session() as session:
            user = await _user(UserRepository(session), email)
            issued = await TokenRepository(session).issue(user, name)
        err.print(f"token {issued.token.id} for {user.email} (shown once; keep it secret):")
        return issued.secret

    typer.echo(_with_db(_settings(database_url), body))


@tokens_app.command("list")
def tokens_list(email: Email, database_url: DatabaseUrl = None) -> None:
    """A user's tokens (ids and prefixes, never the tokens)."""

    async def body(db: Database) -> Table:
        async with db.session() as session:
            user = await _user(UserRepository(session), email)
            tokens = await TokenRepository(session).for_user(user.id)
        # Ids are what `emp tokens revoke` takes: never truncate them.
        table = Table(
            Column("id", no_wrap=True, min_width=32), "name", "prefix", "last used", "revoked"
        )
        for t in tokens:
            used = f"{t.last_used_at:%Y-%m-%d %H:%M}" if t.last_used_at else "never"
            revoked = f"{t.revoked_at:%Y-%m-%d %H:%M}" if t.revoked_at else ""
            table.add_row(t.id, t.name, t.prefix + "…", used, revoked)
        return table

    out.print(_with_db(_settings(database_url), body))


@tokens_app.command("revoke")
def tokens_revoke(
    token_id: Annotated[str, typer.Argument(help="The token's id (see `emp tokens list`).")],
    database_url: DatabaseUrl = None,
) -> None:
    """Revoke a token, and tell every API process (over the queue's Redis) to drop it and close
    its sockets at once; without Redis they stop accepting it within their auth cache time."""

    async def body(db: Database) -> bool:
        async with db.session() as session:
            return await TokenRepository(session).revoke(token_id)

    if not _with_db(_settings(database_url), body):
        error(f"no live token has the id {token_id}")
        raise typer.Exit(2)
    told = asyncio.run(_announce(Revocation(token_ids=(token_id,), reason="the token was revoked")))
    err.print(f"token {token_id} revoked" + ("" if told else " (Redis not reached: API processes "
              "drop it within their auth cache time)"))  # fmt: skip


async def _announce(revocation: Revocation) -> bool:
    settings = QueueSettings()
    redis = connect(settings.redis_url, socket_connect_timeout=2.0)
    try:
        return await publish(redis, settings.keys, revocation)
    finally:
        await redis.aclose()


Revision = Annotated[str, typer.Option(help="Target revision.")]


@db_app.command("upgrade")
def db_upgrade(revision: Revision = "head", database_url: DatabaseUrl = None) -> None:
    """Migrate the database up (to the newest revision by default)."""
    settings = _settings(database_url)
    _run(migrate.upgrade(settings, revision), settings)
    now = _run(migrate.current_revision(settings), settings)
    err.print(f"database at revision {now}")


@db_app.command("downgrade")
def db_downgrade(revision: Revision = "base", database_url: DatabaseUrl = None) -> None:
    """Migrate the database down (to an empty schema by default)."""
    settings = _settings(database_url)
    _run(migrate.downgrade(settings, revision), settings)
    now = _run(migrate.current_revision(settings), settings)
    err.print(f"database at revision {now or 'base'}")


@db_app.command("current")
def db_current(database_url: DatabaseUrl = None) -> None:
    """Print the database's revision and the newest one this code has."""
    settings = _settings(database_url)
    now = _run(migrate.current_revision(settings), settings)
    out.print(f"{now or 'base'} (head: {migrate.head_revision()})")
