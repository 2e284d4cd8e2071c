"""``emp patterns``: error patterns (ADR-009) in and out of SQL as YAML.

``import`` validates every pattern in the file before saving any, creates new ones and updates
those with the same name and connector, and publishes one snapshot for the workers. ``export``
writes every pattern, enabled or not, to stdout (or a file) in the same format.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

import typer

from emp_cli.admin import DatabaseUrl, _run, _settings
from emp_cli.output import err, error, out
from emp_core.patterns.portable import dump_yaml, parse_yaml, starter_specs
from emp_core.patterns.rules import PatternSpec
from emp_core.redis import connect
from emp_core.settings import QueueSettings
from emp_sql.error_patterns import as_dict
from emp_sql.patterns_admin import PatternAdmin
from emp_sql.session import Database

patterns_app = typer.Typer(help="Error patterns: import and export as YAML.", no_args_is_help=True)


@asynccontextmanager
async def _admin(database_url: str | None) -> AsyncIterator[PatternAdmin]:
    queue = QueueSettings()
    database = Database(_settings(database_url))
    redis = connect(queue.redis_url)
    try:
        yield PatternAdmin(database, redis, queue.keys)
    finally:
        await redis.aclose()
        await database.dispose()


async def _import(database_url: str | None, specs: list[PatternSpec], by: str) -> tuple[int, int]:
    async with _admin(database_url) as admin:
        return await admin.import_specs(specs, by=by)


async def _export(database_url: str | None) -> list[PatternSpec]:
    async with _admin(database_url) as admin:
        rows = await admin.find()
    fields = PatternSpec.model_fields
    return [PatternSpec.model_construct(**{k: as_dict(r)[k] for k in fields}) for r in rows]


@patterns_app.command("import")
def import_patterns(
    file: Annotated[
        Path | None, typer.Argument(help="A YAML file; omit with --starter.", show_default=False)
    ] = None,
    starter: Annotated[bool, typer.Option(help="Import the starter set shipped here.")] = False,
    by: Annotated[str, typer.Option(help="Recorded in the change history.")] = "cli",
    database_url: DatabaseUrl = None,
) -> None:
    """Create or update patterns from FILE.yaml, then publish them to the workers."""
    if (file is None) == (not starter):
        error("give a FILE or --starter, not both")
        raise typer.Exit(2)
    specs = starter_specs() if starter else _run_parse(file)
    created, updated = _run(_import(database_url, specs, by), _settings(database_url))
    err.print(f"{created} pattern(s) created, {updated} updated; workers have them within seconds")


def _run_parse(file: Path | None) -> list[PatternSpec]:
    assert file is not None
    try:
        return parse_yaml(file.read_text("utf-8"))
    except OSError as exc:
        error(f"cannot read {file}: {exc}")
        raise typer.Exit(2) from None
    except Exception as exc:
        error(str(getattr(exc, "message", exc)))
        raise typer.Exit(2) from None


@patterns_app.command("export")
def export_patterns(
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Default: stdout.")] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Write every pattern as YAML, in the format ``import`` reads."""
    specs = _run(_export(database_url), _settings(database_url))
    text = dump_yaml(specs)
    if output is None:
        out.print(text, end="")
    else:
        output.write_text(text, "utf-8")
        err.print(f"{len(specs)} pattern(s) written to {output}")
