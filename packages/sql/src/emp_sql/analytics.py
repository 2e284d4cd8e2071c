"""Fleet analytics from the SQL archive (issue 17, item 5): over a window of finished jobs (at
most ``MAX_ROWS``, newest first, one indexed-range query; never live Redis keys), per service and
per service and model: p50/p95 wait (claimed − created) and run (finished − claimed), throughput,
failures, and the retry success rate (jobs that needed more than one attempt and completed); and
failures per category and per worker."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
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
    model: str | None = None  # set on the per-model rows: what ``model_of`` names
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
    models: list[ServiceStats]  # the same figures per service and model
    failures_by_category: dict[str, int]
    failures_by_worker: dict[str, int]


def model_of(data: dict[str, Any]) -> str:
    """The model a job ran on: the models its requirements name (``sd15+sdxl``), else a
    ``model`` string in its payload, else the one its result reports (the diffusers connector
    says which it holds), else ``any``."""
    requirements = data.get("requirements")
    named = requirements.get("models") if isinstance(requirements, dict) else None
    if isinstance(named, list) and named:
        return "+".join(sorted(str(m) for m in named))
    for part in ("payload", "result"):
        value = data.get(part)
        if isinstance(value, dict) and isinstance(value.get("model"), str) and value["model"]:
            return str(value["model"])
    return "any"


@dataclass
class _Tally:
    """The figures of one row (a service, or a service and model), added up job by job."""

    finished: int = 0
    completed: int = 0
    failed: int = 0
    retried: int = 0
    retried_completed: int = 0
    waits: list[float] = field(default_factory=list)
    runs: list[float] = field(default_factory=list)

    def add(self, status: str, data: dict[str, Any]) -> None:
        self.finished += 1
        created, claimed = _when(data.get("created_at")), _when(data.get("claimed_at"))
        finished = _when(data.get("finished_at"))
        if created and claimed:
            self.waits.append(max(0.0, (claimed - created).total_seconds()))
        if claimed and finished and status == "completed":
            self.runs.append(max(0.0, (finished - claimed).total_seconds()))
        retried = int(data.get("attempts") or 0) > 1
        self.retried += retried
        if status == "completed":
            self.completed += 1
            self.retried_completed += retried
        elif status == "failed":
            self.failed += 1

    def stats(self, service: str, model: str | None, hours: float) -> ServiceStats:
        return ServiceStats(
            service=service, model=model, finished=self.finished, completed=self.completed,
            failed=self.failed, per_hour=round(self.finished / hours, 3),
            wait_p50_s=_pct(self.waits, 0.5), wait_p95_s=_pct(self.waits, 0.95),
            run_p50_s=_pct(self.runs, 0.5), run_p95_s=_pct(self.runs, 0.95),
            retried=self.retried, retried_completed=self.retried_completed,
        )  # fmt: skip


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
    per_service: dict[str, _Tally] = defaultdict(_Tally)
    per_model: dict[tuple[str, str], _Tally] = defaultdict(_Tally)
    categories: Counter[str] = Counter()
    workers: Counter[str] = Counter()
    for service, status, data in rows:
        per_service[service].add(status, data)
        per_model[service, model_of(data)].add(status, data)
        if status == "failed":
            categories[data.get("error_category") or "unknown"] += 1
            workers[data.get("worker_id") or "unknown"] += 1
    hours = max(window.total_seconds() / 3600, 1e-9)
    return Analytics(
        window_s=int(window.total_seconds()), since=since, jobs=len(rows), truncated=truncated,
        services=[t.stats(name, None, hours) for name, t in sorted(per_service.items())],
        models=[t.stats(name, model, hours) for (name, model), t in sorted(per_model.items())],
        failures_by_category=dict(categories.most_common()),
        failures_by_worker=dict(workers.most_common(20)),
    )  # fmt: skip
