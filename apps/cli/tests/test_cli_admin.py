"""`emp db upgrade`, `emp users create` and `emp tokens create|list|revoke` on SQLite."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from typer.testing import CliRunner

from emp_cli.main import app
from emp_sql import Database, DatabaseSettings
from emp_sql.auth import Authenticator, Unauthorized


def test_users_and_tokens(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/emp.db"
    runner = CliRunner()

    def emp(*args: str, input: str | None = None, **env: str) -> str:
        result = runner.invoke(app, [*args, "--database-url", url], input=input, env=env)
        assert result.exit_code == 0, result.output
        return result.stdout.strip()

    emp("db", "upgrade")
    admin_token = emp("users", "create", "--email", "Root@Example.com", "--admin",
                      EMP_PASSWORD="long enough")  # fmt: skip
    prompted = runner.invoke(
        app, ["users", "create", "--email", "u@example.com", "--no-token", "--database-url", url],
        input="hunter2hunter2\nhunter2hunter2\n",
    )  # fmt: skip
    assert prompted.exit_code == 0, prompted.output
    assert "emp_" not in prompted.stdout
    user_token = emp("tokens", "create", "--email", "u@example.com", "--name", "laptop")
    assert user_token.startswith("emp_")
    assert admin_token.startswith("emp_")

    duplicate = runner.invoke(
        app, ["users", "create", "--email", "root@example.com", "--password", "x" * 9,
              "--database-url", url],
    )  # fmt: skip
    assert duplicate.exit_code == 2
    assert "exists" in duplicate.output

    async def who(token: str) -> tuple[str, bool]:
        db = Database(DatabaseSettings(database_url=url))
        try:
            principal = await Authenticator(db, cache_seconds=0).authenticate(token)
            return principal.email, principal.is_admin
        finally:
            await db.dispose()

    assert asyncio.run(who(admin_token)) == ("root@example.com", True)
    assert asyncio.run(who(user_token)) == ("u@example.com", False)

    listing = emp("tokens", "list", "--email", "u@example.com")
    token_id = next(line.split()[1] for line in listing.splitlines() if "laptop" in line)
    emp("tokens", "revoke", token_id)
    with pytest.raises(Unauthorized):
        asyncio.run(who(user_token))
    emp("db", "downgrade")
