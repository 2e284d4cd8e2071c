"""Fleet analytics from the SQL archive (issue 17, item 5, first cut): over a window of finished
jobs (at most ``MAX_ROWS``, newest first, one indexed-range query; never live Redis keys), per
service p50/p95 wait (claimed − created) and run (finished − claimed), throughput, failure rate
per category and per worker, and the retry success rate (jobs that needed more than one attempt
and completed)."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel
from sqlalchemy import select

from emp_sql.models import ArchivedJob
from emp_sql.session import Database

MAX_ROWS = 20_000


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


def _when(value: Any) -> datetime | None:
    if not value:
        return None
    when = datetime.fromisoformat(str(value))
    return when if when.tzinfo else when.replace(tzinfo=UTC)


class ServiceStats(BaseModel):
    service: str
    finished: int
    completed: int
    failed: int
    per_hour: float
    wait_p50_s: float | None
    wait_p95_s: float | None
    run_p50_s: float | None
    run_p95_s: float | None
    retried: int  # jobs that needed more than one attempt
    retried_completed: int


class Analytics(BaseModel):
    window_s: int
    since: datetime
    jobs: int
    truncated: bool  # more than MAX_ROWS finished in the window: the newest were read
    services: list[ServiceStats]
    failures_by_category: dict[str, int]
    failures_by_worker: dict[str, int]


async def analytics(database: Database, window: timedelta) -> Analytics:
    since = datetime.now(UTC) - window
    async with database.session() as session:
        rows = (
            await session.execute(
                select(ArchivedJob.service, ArchivedJob.status, ArchivedJob.data)
                .where(ArchivedJob.finished_at >= since)
                .order_by(ArchivedJob.finished_at.desc())
                .limit(MAX_ROWS + 1)
            )
        ).all()
    truncated = len(rows) > MAX_ROWS
    rows = rows[:MAX_ROWS]
    per: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"n": 0, "ok": 0, "bad": 0, "wait": [], "run": [], "retried": 0, "rok": 0}
    )
    categories: Counter[str] = Counter()
    workers: Counter[str] = Counter()
    for service, status, data in rows:
        s = per[service]
        s["n"] += 1
        created, claimed = _when(data.get("created_at")), _when(data.get("claimed_at"))
        finished = _when(data.get("finished_at"))
        if created and claimed:
            s["wait"].append(max(0.0, (claimed - created).total_seconds()))
        if claimed and finished and status == "completed":
            s["run"].append(max(0.0, (finished - claimed).total_seconds()))
        retried = int(data.get("attempts") or 0) > 1
        s["retried"] += retried
        if status == "completed":
            s["ok"] += 1
            s["rok"] += retried
        elif status == "failed":
            s["bad"] += 1
            categories[data.get("error_category") or "unknown"] += 1
            workers[data.get("worker_id") or "unknown"] += 1
    hours = max(window.total_seconds() / 3600, 1e-9)
    services = [
        ServiceStats(
            service=name,
            finished=s["n"],
            completed=s["ok"],
            failed=s["bad"],
            per_hour=round(s["n"] / hours, 3),
            wait_p50_s=_pct(s["wait"], 0.5),
            wait_p95_s=_pct(s["wait"], 0.95),
            run_p50_s=_pct(s["run"], 0.5),
            run_p95_s=_pct(s["run"], 0.95),
            retried=s["retried"],
            retried_completed=s["rok"],
        )
        for name, s in sorted(per.items())
    ]
    return Analytics(
        window_s=int(window.total_seconds()), since=since, jobs=len(rows), truncated=truncated,
        services=services, failures_by_category=dict(categories.most_common()),
        failures_by_worker=dict(workers.most_common(20)),
    )  # fmt: skip
