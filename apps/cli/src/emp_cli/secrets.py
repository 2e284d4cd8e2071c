"""``emp secrets``: the secrets stored sealed in SQL (webhook signing secrets), by the data key
that sealed them, and sealing them now.

Rotating ``EMP_DATA_KEY``: put the new key first (``emp env keygen`` makes one), restart the API
or run ``emp secrets seal`` with the new value, then ``emp secrets status`` shows no value left
under the old key id and the old key can be dropped.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.table import Table

from emp_cli.output import err, error, out
from emp_core.errors import EmpError
from emp_sql.session import Database
from emp_sql.settings import DatabaseSettings
from emp_sql.webhook_secrets import seal_stored, stored_by_key

secrets_app = typer.Typer(
    help="Secrets stored sealed in SQL (webhook signing secrets) and the data key.",
    no_args_is_help=True,
)

DatabaseUrl = Annotated[
    str | None, typer.Option(help="Database URL (default: EMP_DATABASE_URL).", show_default=False)
]


def _database(database_url: str | None) -> Database:
    settings = DatabaseSettings(database_url=database_url) if database_url else DatabaseSettings()
    return Database(settings)


@secrets_app.command("status")
def status(database_url: DatabaseUrl = None) -> None:
    """Count the stored secrets by the key that sealed them, and say which keys EMP_DATA_KEY
    holds. Exits 1 when a value is plaintext or sealed by a key EMP_DATA_KEY does not hold."""

    async def run() -> tuple[dict[str, int], list[str], str]:
        database = _database(database_url)
        try:
            sealer = database.sealer
            counts = dict(await stored_by_key(database))
            return counts, [k.kid for k in sealer.ring.keys], sealer.current_kid
        finally:
            await database.dispose()

    try:
        counts, held, current = asyncio.run(run())
    except EmpError as exc:
        error(exc.message)
        raise typer.Exit(2) from None
    table = Table("sealed by", "values", "EMP_DATA_KEY")
    for kid in sorted(set(counts) | set(held)):
        state = "current" if kid == current else "holds it" if kid in held else "MISSING"
        table.add_row(kid or "(plaintext)", f"{counts.get(kid, 0):,}", "" if not kid else state)
    out.print(table)
    attention = counts.get("", 0) + sum(n for kid, n in counts.items() if kid and kid not in held)
    if attention:
        err.print(f"{attention:,} values need `emp secrets seal` or a key EMP_DATA_KEY lacks")
        raise typer.Exit(1)


@secrets_app.command("seal")
def seal(database_url: DatabaseUrl = None) -> None:
    """Seal every plaintext secret and re-seal those under an older key with the current one,
    now (every API process also does this when it starts)."""

    async def run() -> tuple[int, dict[str, int]]:
        database = _database(database_url)
        try:
            report = await seal_stored(database)
            return report.sealed, dict(report.unopenable)
        finally:
            await database.dispose()

    try:
        sealed, unopenable = asyncio.run(run())
    except EmpError as exc:
        error(exc.message)
        raise typer.Exit(2) from None
    err.print(f"sealed {sealed:,} values with the current key")
    if unopenable:
        kids = ", ".join(f"{kid} ({n})" for kid, n in sorted(unopenable.items()))
        error(f"values sealed with keys EMP_DATA_KEY does not hold: {kids}")
        raise typer.Exit(1)
