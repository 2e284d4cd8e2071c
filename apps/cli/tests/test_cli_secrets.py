"""`emp secrets status|seal` on SQLite: the stored webhook secrets by the key that sealed them,
and re-sealing them under a new key so the old one can be retired."""

from __future__ import annotations

import asyncio
from pathlib import Path

from typer.testing import CliRunner

from emp_cli.main import app
from emp_core.security.sealing import Sealer
from emp_sql import Database, DatabaseSettings, migrate
from emp_sql.models import Role
from emp_sql.users import UserRepository
from emp_sql.webhooks import WebhookRepository

OLD = Sealer.generate("old").ring.current.encode()
NEW = Sealer.generate("new").ring.current.encode()


async def endpoints(url: str, key: str, count: int) -> None:
    settings = DatabaseSettings(database_url=url, data_key=key)
    await migrate.upgrade(settings)
    db = Database(settings)
    try:
        async with db.session() as session:
            user = await UserRepository(session).create("o@example.com", "x" * 12, role=Role.USER)
            repo = WebhookRepository(session, user.id)
            for i in range(count):
                await repo.create(f"https://example.com/hook/{i}", ["job.completed"],
                                  sealer=db.sealer)  # fmt: skip
    finally:
        await db.dispose()


def test_status_then_seal_under_a_new_key_lets_the_old_one_go(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/emp.db"
    asyncio.run(endpoints(url, OLD, 3))
    runner = CliRunner()

    def emp(*args: str, key: str) -> tuple[int, str]:
        result = runner.invoke(app, ["secrets", *args, "--database-url", url],
                               env={"EMP_DATA_KEY": key})  # fmt: skip
        return result.exit_code, result.output

    code, output = emp("status", key=OLD)
    assert code == 0, output
    assert "old" in output
    assert "current" in output
    assert "3" in output

    # The new key first, the old one still held: everything opens, nothing needs attention yet.
    code, output = emp("status", key=f"{NEW},{OLD}")
    assert code == 0, output
    assert "holds it" in output

    code, output = emp("seal", key=f"{NEW},{OLD}")
    assert code == 0, output
    assert "sealed 3 values" in output
    # Every value is under the new key now: the old one can be dropped.
    code, output = emp("status", key=NEW)
    assert code == 0, output
    assert "old" not in output


def test_values_under_a_key_the_setting_lacks_are_reported(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/emp.db"
    asyncio.run(endpoints(url, OLD, 2))
    result = CliRunner().invoke(app, ["secrets", "status", "--database-url", url],
                                env={"EMP_DATA_KEY": NEW})  # fmt: skip
    assert result.exit_code == 1
    assert "MISSING" in result.output
    assert "2 values need" in result.output
    sealed = CliRunner().invoke(app, ["secrets", "seal", "--database-url", url],
                                env={"EMP_DATA_KEY": NEW})  # fmt: skip
    assert sealed.exit_code == 1
    assert "old (2)" in sealed.output
