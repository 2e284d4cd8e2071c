"""The service admins change error patterns through (API, studio and CLI alike): every change is
validated, written to SQL with its history in one transaction, then published to workers."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

from redis.asyncio import Redis

from emp_core.errors import InvalidInput
from emp_core.patterns import counts
from emp_core.patterns.engine import Snapshot
from emp_core.patterns.rules import Classification, PatternSpec
from emp_core.patterns.store import publish_snapshot
from emp_core.queue.keys import Keys
from emp_sql.error_patterns import ErrorPatternRepository, PatternFilter, as_dict
from emp_sql.models import ErrorPattern, ErrorPatternChange
from emp_sql.session import Database

logger = logging.getLogger(__name__)


def _version(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInput("version: give the version you edited (an integer ≥ 1)", field="version")
    return value


class PatternAdmin:
    """Error patterns of one deployment: SQL is the truth, Redis holds what workers use."""

    def __init__(self, database: Database, redis: Redis, keys: Keys) -> None:
        self.database = database
        self.redis = redis
        self.keys = keys

    async def find(self, where: PatternFilter | None = None) -> list[ErrorPattern]:
        async with self.database.session() as db:
            return await ErrorPatternRepository(db).find(where)

    async def get(self, pattern_id: str) -> ErrorPattern:
        async with self.database.session() as db:
            return await ErrorPatternRepository(db).get(pattern_id)

    async def create(self, data: PatternSpec | Mapping[str, Any], *, by: str) -> ErrorPattern:
        spec = PatternSpec.parse(data)
        async with self.database.session() as db:
            row = await ErrorPatternRepository(db).create(spec, by=by)
        logger.info("%s created error pattern %s (%s)", by, row.id, row.name)
        await self.publish()
        return row

    async def update(
        self, pattern_id: str, data: PatternSpec | Mapping[str, Any], *, version: Any, by: str
    ) -> ErrorPattern:
        expected = _version(version)
        spec = PatternSpec.parse(data)
        async with self.database.session() as db:
            row = await ErrorPatternRepository(db).update(pattern_id, spec, version=expected, by=by)
        logger.info("%s changed error pattern %s to version %d", by, row.id, row.version)
        await self.publish()
        return row

    async def set_enabled(
        self, pattern_id: str, enabled: bool, *, version: Any, by: str
    ) -> ErrorPattern:
        expected = _version(version)
        async with self.database.session() as db:
            repo = ErrorPatternRepository(db)
            current = await repo.get(pattern_id)
            fields = {k: v for k, v in as_dict(current).items() if k in PatternSpec.model_fields}
            spec = PatternSpec.parse({**fields, "enabled": enabled})
            action = "enabled" if enabled else "disabled"
            row = await repo.update(pattern_id, spec, version=expected, by=by, action=action)
        await self.publish()
        return row

    async def delete(self, pattern_id: str, *, version: Any | None, by: str) -> None:
        expected = None if version is None else _version(version)
        async with self.database.session() as db:
            await ErrorPatternRepository(db).delete(pattern_id, version=expected, by=by)
        logger.info("%s deleted error pattern %s", by, pattern_id)
        await self.publish()

    async def import_specs(self, specs: list[PatternSpec], *, by: str) -> tuple[int, int]:
        """Create each pattern, or update the one with the same name and connector; one
        transaction, one publish. Returns (created, updated)."""
        created = updated = 0
        async with self.database.session() as db:
            repo = ErrorPatternRepository(db)
            existing = {(r.name, r.connector): r for r in await repo.find()}
            for spec in specs:
                row = existing.get((spec.name, spec.connector))
                if row is None:
                    await repo.create(spec, by=by)
                    created += 1
                else:
                    await repo.update(row.id, spec, version=row.version, by=by, action="imported")
                    updated += 1
        await self.publish()
        return created, updated

    async def history(self, pattern_id: str | None = None) -> list[ErrorPatternChange]:
        async with self.database.session() as db:
            return await ErrorPatternRepository(db).history(pattern_id)

    async def stats(
        self, *, days: int = 14, pattern_id: str | None = None
    ) -> tuple[dict[str, dict[date, int]], dict[str, tuple[int, datetime | None]]]:
        """(matches per pattern per day over ``days``, (total, last match) per pattern)."""
        async with self.database.session() as db:
            repo = ErrorPatternRepository(db)
            return await repo.daily_matches(days=days, pattern_id=pattern_id), await repo.totals()

    async def current_snapshot(self) -> Snapshot:
        async with self.database.session() as db:
            version, rules = await ErrorPatternRepository(db).snapshot_rules()
        return Snapshot.build(version, rules, source="sql")

    async def publish(self) -> Snapshot:
        """Read the enabled patterns after the commit and publish them as a new snapshot."""
        snapshot = await self.current_snapshot()
        await publish_snapshot(self.redis, self.keys, snapshot)
        return snapshot

    async def test(
        self, message: str, *, connector: str | None = None, http_status: int | None = None,
        candidate: PatternSpec | None = None, replaces: str | None = None,
    ) -> tuple[Classification, bool]:  # fmt: skip
        """Classify ``message`` as workers would now, or with ``candidate`` saved (replacing the
        pattern ``replaces``). Returns the classification and whether the candidate decided it."""
        snapshot = await self.current_snapshot()
        rules = list(snapshot.rules)
        if candidate is not None:
            rules = [r for r in rules if r.id != replaces]
            if candidate.enabled:
                rules.append(candidate.rule("candidate"))
        outcome = Snapshot.build(snapshot.version, rules).classify(
            message, connector=connector, http_status=http_status
        )
        return outcome, outcome.pattern_id == "candidate"

    async def fold_counts(self) -> int:
        """Fold the match counts workers left in Redis into SQL (see ``counts.fold``)."""

        async def into_sql(token: str, day_counts: list[counts.DayCount]) -> bool:
            async with self.database.session() as db:
                return await ErrorPatternRepository(db).fold(token, day_counts)

        return await counts.fold(self.redis, self.keys, into_sql)
