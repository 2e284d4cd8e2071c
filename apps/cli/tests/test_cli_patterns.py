"""``emp patterns import`` and ``export``: the starter set round-trips through SQL and YAML, the
workers' snapshot is published, and a bad file saves nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path

from cli_helpers import emp as _emp

from emp_core.patterns.portable import parse_yaml, starter_specs
from emp_core.patterns.store import read_snapshot
from emp_core.queue.queue import Queue
from emp_core.settings import QueueSettings
from emp_sql import DatabaseSettings, migrate


async def test_import_export_round_trip(
    queue: Queue, settings: QueueSettings, tmp_path: Path
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/emp.db"
    await migrate.upgrade(DatabaseSettings(database_url=url))
    db = ("--database-url", url)
    imported = await asyncio.to_thread(_emp, settings, "patterns", "import", "--starter", *db)
    assert imported.returncode == 0, imported.stderr
    assert f"{len(starter_specs())} pattern(s) created" in imported.stderr
    snapshot = await read_snapshot(queue.redis, queue.keys)
    assert snapshot is not None
    assert len(snapshot.rules) == len(starter_specs())

    exported = await asyncio.to_thread(_emp, settings, "patterns", "export", *db)
    assert exported.returncode == 0, exported.stderr
    assert {s.name for s in parse_yaml(exported.stdout)} == {s.name for s in starter_specs()}

    bad = tmp_path / "bad.yaml"
    bad.write_text("patterns:\n  - name: x\n    pattern: '(a+)+'\n    match_kind: regex\n"
                   "    category: unknown\n    retryable: true\n    user_message: m\n")  # fmt: skip
    refused = await asyncio.to_thread(_emp, settings, "patterns", "import", str(bad), *db)
    assert refused.returncode == 2
    assert "patterns[0]" in refused.stderr
    again = await asyncio.to_thread(_emp, settings, "patterns", "import", "--starter", *db)
    assert f"0 pattern(s) created, {len(starter_specs())} updated" in again.stderr
