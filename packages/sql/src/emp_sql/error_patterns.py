"""Error patterns in SQL: create, update (optimistic on ``version``), delete, history, stats."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from emp_core.errors import Conflict, NotFound
from emp_core.patterns.counts import DayCount
from emp_core.patterns.rules import Category, MatchKind, PatternRule, PatternSpec
from emp_sql.models import ErrorPattern, ErrorPatternChange, ErrorPatternFold, ErrorPatternStat

_SPEC_FIELDS = tuple(PatternSpec.model_fields)


def as_dict(row: ErrorPattern) -> dict[str, Any]:
    """A pattern as the history stores it and the API returns it."""
    out: dict[str, Any] = {name: getattr(row, name) for name in _SPEC_FIELDS}
    out.update(
        id=row.id, version=row.version, updated_by=row.updated_by,
        updated_at=row.updated_at.isoformat() if row.updated_at else None,
    )  # fmt: skip
    return out


def as_rule(row: ErrorPattern) -> PatternRule:
    return PatternRule(
        id=row.id, name=row.name, match_kind=MatchKind(row.match_kind), pattern=row.pattern,
        category=Category(row.category), retryable=row.retryable, user_message=row.user_message,
        connector=row.connector, case_sensitive=row.case_sensitive,
        retry_delay_s=row.retry_delay_s, priority=row.priority,
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class PatternFilter:
    connector: str | None = None  # "" for global patterns only
    category: str | None = None
    enabled: bool | None = None
    search: str | None = None


class ErrorPatternRepository:
    """Error patterns within one session (one transaction)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, pattern_id: str) -> ErrorPattern:
        row = await self.session.get(ErrorPattern, pattern_id)
        if row is None:
            raise NotFound(f"error pattern {pattern_id} does not exist", field="id")
        return row

    async def find(self, where: PatternFilter | None = None) -> list[ErrorPattern]:
        where = where or PatternFilter()
        query = select(ErrorPattern)
        if where.connector == "":
            query = query.where(ErrorPattern.connector.is_(None))
        elif where.connector is not None:
            query = query.where(ErrorPattern.connector == where.connector)
        if where.category:
            query = query.where(ErrorPattern.category == where.category)
        if where.enabled is not None:
            query = query.where(ErrorPattern.enabled.is_(where.enabled))
        if where.search:
            like = f"%{where.search.lower()}%"
            query = query.where(
                func.lower(ErrorPattern.name).like(like)
                | func.lower(ErrorPattern.pattern).like(like)
            )
        query = query.order_by(
            ErrorPattern.connector.is_(None), ErrorPattern.priority.desc(), ErrorPattern.name
        )
        return list((await self.session.execute(query)).scalars())

    async def _log(
        self, row_id: str, action: str, by: str, before: dict[str, Any] | None,
        after: dict[str, Any] | None, now: datetime,
    ) -> None:  # fmt: skip
        self.session.add(
            ErrorPatternChange(
                pattern_id=row_id,
                action=action,
                changed_by=by,
                changed_at=now,
                before=before,
                after=after,
            )
        )

    async def create(
        self, spec: PatternSpec, *, by: str, now: datetime | None = None
    ) -> ErrorPattern:
        now = now or datetime.now(UTC)
        row = ErrorPattern(**spec.model_dump(), updated_by=by, updated_at=now, version=1)
        self.session.add(row)
        await self.session.flush()
        await self._log(row.id, "created", by, None, as_dict(row), now)
        return row

    def _check_version(self, row: ErrorPattern, expected: int) -> None:
        if row.version != expected:
            raise Conflict(
                f"error pattern {row.name!r} was changed by {row.updated_by} (now version "
                f"{row.version}, you edited version {expected}); reload it and apply your "
                "change again",
                field="version",
            )

    async def update(
        self, pattern_id: str, spec: PatternSpec, *, version: int, by: str,
        now: datetime | None = None, action: str = "updated",
    ) -> ErrorPattern:  # fmt: skip
        """Replace a pattern's fields; ``Conflict`` when ``version`` is not the stored one."""
        now = now or datetime.now(UTC)
        row = await self._locked(pattern_id)
        self._check_version(row, version)
        before = as_dict(row)
        for name, value in spec.model_dump().items():
            setattr(row, name, value)
        row.version += 1
        row.updated_by, row.updated_at = by, now
        await self.session.flush()
        await self._log(row.id, action, by, before, as_dict(row), now)
        return row

    async def delete(self, pattern_id: str, *, version: int | None, by: str) -> None:
        row = await self._locked(pattern_id)
        if version is not None:
            self._check_version(row, version)
        await self._log(row.id, "deleted", by, as_dict(row), None, datetime.now(UTC))
        await self.session.delete(row)
        await self.session.flush()

    async def _locked(self, pattern_id: str) -> ErrorPattern:
        # FOR UPDATE on PostgreSQL: two saves of one pattern queue up, and the second sees the
        # first's version; SQLite serialises writers anyway and ignores it.
        query = select(ErrorPattern).where(ErrorPattern.id == pattern_id).with_for_update()
        row = (await self.session.execute(query)).scalar_one_or_none()
        if row is None:
            raise NotFound(f"error pattern {pattern_id} does not exist", field="id")
        return row

    async def history(
        self, pattern_id: str | None = None, *, limit: int = 100
    ) -> list[ErrorPatternChange]:
        query = select(ErrorPatternChange).order_by(ErrorPatternChange.id.desc()).limit(limit)
        if pattern_id is not None:
            query = query.where(ErrorPatternChange.pattern_id == pattern_id)
        return list((await self.session.execute(query)).scalars())

    async def snapshot_rules(self) -> tuple[int, list[PatternRule]]:
        """(version, enabled rules): the version is the newest change's id."""
        version = await self.session.scalar(select(func.max(ErrorPatternChange.id))) or 0
        rows = await self.session.execute(
            select(ErrorPattern).where(ErrorPattern.enabled.is_(True))
        )
        return int(version), [as_rule(r) for r in rows.scalars()]

    # --- statistics -------------------------------------------------------------------------------
    async def fold(
        self, token: str, counts: Sequence[DayCount], *, now: datetime | None = None
    ) -> bool:
        """Add one hand-off's counts to the stats; False (and nothing added) when this token
        was folded before. Counts of patterns that no longer exist are dropped."""
        if await self.session.get(ErrorPatternFold, token) is not None:
            return False
        now = now or datetime.now(UTC)
        self.session.add(ErrorPatternFold(token=token, folded_at=now))
        await self.session.flush()  # the primary key refuses a concurrent fold of this token
        ids = {c.pattern_id for c in counts}
        known = set(
            (
                await self.session.execute(select(ErrorPattern.id).where(ErrorPattern.id.in_(ids)))
            ).scalars()
        )
        dialect = self.session.get_bind().dialect.name
        insert = pg_insert if dialect == "postgresql" else sqlite_insert
        for c in counts:
            if c.pattern_id not in known:
                continue
            stmt = insert(ErrorPatternStat).values(
                pattern_id=c.pattern_id, day=c.day, connector=c.connector, matches=c.matches,
                last_matched_at=c.last_matched_at,
            )  # fmt: skip
            table = ErrorPatternStat.__table__
            stmt = stmt.on_conflict_do_update(
                index_elements=["pattern_id", "day", "connector"],
                set_={
                    "matches": table.c.matches + stmt.excluded.matches,
                    "last_matched_at": func.coalesce(
                        stmt.excluded.last_matched_at, table.c.last_matched_at
                    ),
                },
            )
            await self.session.execute(stmt)
        # Tokens only guard against a crash between commit and the Redis delete: a week is ample.
        old = select(ErrorPatternFold).where(ErrorPatternFold.folded_at < now - timedelta(days=7))
        for stale in (await self.session.execute(old)).scalars():
            await self.session.delete(stale)
        return True

    async def daily_matches(
        self, *, days: int = 14, pattern_id: str | None = None, today: date | None = None
    ) -> dict[str, dict[date, int]]:
        """Matches per pattern per day over the last ``days`` days (connectors summed)."""
        today = today or datetime.now(UTC).date()
        since = today - timedelta(days=days - 1)
        query = (
            select(
                ErrorPatternStat.pattern_id,
                ErrorPatternStat.day,
                func.sum(ErrorPatternStat.matches),
            )
            .where(ErrorPatternStat.day >= since)
            .group_by(ErrorPatternStat.pattern_id, ErrorPatternStat.day)
        )
        if pattern_id is not None:
            query = query.where(ErrorPatternStat.pattern_id == pattern_id)
        out: dict[str, dict[date, int]] = {}
        for pid, day, total in (await self.session.execute(query)).all():
            out.setdefault(pid, {})[day] = int(total)
        return out

    async def totals(self) -> dict[str, tuple[int, datetime | None]]:
        """Every pattern's matches of all time and its last match."""
        query = select(
            ErrorPatternStat.pattern_id, func.sum(ErrorPatternStat.matches),
            func.max(ErrorPatternStat.last_matched_at),
        ).group_by(ErrorPatternStat.pattern_id)  # fmt: skip
        return {pid: (int(n), last) for pid, n, last in (await self.session.execute(query)).all()}
