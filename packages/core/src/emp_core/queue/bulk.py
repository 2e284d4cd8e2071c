"""Bulk operator actions over the queue (issue 17): retry, cancel and purge the jobs a filter
selects, in bounded batches.

Redis runs one command at a time, so a bulk action never sends one long command: it walks the
index of the jobs' status (``dead`` for failed jobs, ``delayed`` for retrying ones, ``leases``
for claimed and running ones, the class sets of a service for pending ones) a page at a time
(``ZRANGEBYSCORE … LIMIT``), reads each page's jobs with one pipeline of ``HMGET``s, and acts on
the page's matches with one bounded call (``emp_retry`` takes at most ``batch`` ids; cancels go
in a pipeline of at most ``batch`` ``emp_cancel`` calls, which Redis interleaves with other
clients' commands). Between pages other clients (claims) are served. ``BulkResult`` counts the
pages and the largest batch, which the tests assert instead of time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from emp_core.errors import InvalidInput
from emp_core.queue.queue import Queue
from emp_core.redis import text

Status = Literal["pending", "retrying", "running", "failed"]
MAX_BATCH = 500
_FIELDS = ("status", "service", "customer_id", "error_category", "created_at")


@dataclass(frozen=True, slots=True)
class JobFilter:
    """Which jobs a bulk action touches. ``status`` picks the index walked (``running`` means
    claimed or running); the rest are checked on each job. Times bound ``created_at``."""

    status: Status
    service: str | None = None
    customer_id: str | None = None
    category: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None

    def matches(self, f: dict[str, str]) -> bool:
        if not f.get("status"):
            return False
        wanted = {"running": {"claimed", "running"}}.get(self.status, {self.status})
        if f["status"] not in wanted:
            return False
        if self.service is not None and f.get("service") != self.service:
            return False
        if self.customer_id is not None and f.get("customer_id") != self.customer_id:
            return False
        if self.category is not None and f.get("error_category") != self.category:
            return False
        created = int(f.get("created_at") or 0)
        if self.created_after is not None and created < self.created_after.timestamp() * 1000:
            return False
        return not (
            self.created_before is not None and created >= self.created_before.timestamp() * 1000
        )

    def describe(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "service": self.service,
            "customer_id": self.customer_id,
            "category": self.category,
            "created_after": self.created_after.isoformat() if self.created_after else None,
            "created_before": self.created_before.isoformat() if self.created_before else None,
        }


@dataclass(slots=True)
class BulkResult:
    matched: int = 0  # jobs the filter selected
    touched: int = 0  # jobs the action changed (0 in a dry run)
    skipped: int = 0  # matched jobs whose state changed before the action reached them
    pages: int = 0  # index pages read
    calls: int = 0  # writing calls (FCALLs or pipelines of them)
    largest_batch: int = 0  # most jobs one writing call handled
    job_ids: list[str] = field(default_factory=list)  # the first few touched, for the audit


OnBatch = Callable[[BulkResult], Awaitable[None]]


class BulkActions:
    """Bulk actions over one queue."""

    def __init__(self, queue: Queue, *, batch: int = 200) -> None:
        if not 1 <= batch <= MAX_BATCH:
            raise InvalidInput(f"must be from 1 to {MAX_BATCH}", field="batch")
        self.queue = queue
        self.redis = queue.redis
        self.keys = queue.keys
        self.batch = batch

    async def _index_keys(self, flt: JobFilter) -> list[str]:
        k = self.keys
        if flt.status == "failed":
            return [k.dead()]
        if flt.status == "retrying":
            return [k.delayed()]
        if flt.status == "running":
            return [k.leases()]
        if flt.service is not None:
            services = [flt.service]
        else:
            services = [text(s) for s in await self.redis.hkeys(k.pending_count())]
        out: list[str] = []
        for service in services:
            classes: Any = await self.redis.hkeys(k.classes(service))
            out += [k.pending(text(c)) for c in classes]
        return out

    async def pages(self, flt: JobFilter) -> AsyncIterator[list[str]]:
        """The ids of the jobs ``flt`` selects, a page (at most ``batch``) at a time. Walks each
        index by score from a cursor, so removing what a page acted on does not skip any job."""
        for key in await self._index_keys(flt):
            low: str = "-inf"
            seen_at_low: set[str] = set()
            while True:
                entries: Any = await self.redis.zrangebyscore(
                    key, low, "+inf", start=0, num=self.batch + len(seen_at_low), withscores=True
                )
                fresh = [(text(m), s) for m, s in entries if text(m) not in seen_at_low]
                fresh = fresh[: self.batch]
                if not fresh:
                    break
                ids = [m for m, _ in fresh]
                async with self.redis.pipeline(transaction=False) as pipe:
                    for job_id in ids:
                        pipe.hmget(self.keys.job(job_id), *_FIELDS)
                    rows = await pipe.execute()
                matched = [
                    job_id
                    for job_id, row in zip(ids, rows, strict=True)
                    if flt.matches(
                        {n: text(v) for n, v in zip(_FIELDS, row, strict=True) if v is not None}
                    )
                ]
                last_score = fresh[-1][1]
                new_low = repr(float(last_score))
                if new_low != low:
                    seen_at_low = set()
                low = new_low
                seen_at_low |= {m for m, s in fresh if s == last_score}
                yield matched

    async def count(self, flt: JobFilter) -> BulkResult:
        """A dry run: how many jobs the filter selects now, writing nothing."""
        result = BulkResult()
        async for ids in self.pages(flt):
            result.pages += 1
            result.matched += len(ids)
        return result

    async def retry(
        self,
        flt: JobFilter,
        *,
        reason: str,
        priority: int | None = None,
        on_batch: OnBatch | None = None,
    ) -> BulkResult:
        """Retry the failed (dead-lettered) jobs ``flt`` selects: a fresh attempt budget each."""
        if flt.status != "failed":
            raise InvalidInput("only failed jobs can be retried; use status=failed", field="status")
        result = BulkResult()
        maxlen = self.queue.settings.events_maxlen
        async for ids in self.pages(flt):
            result.pages += 1
            result.matched += len(ids)
            if not ids:
                continue
            retried, skipped = await self.queue.functions.retry(ids, maxlen, priority, reason)
            result.calls += 1
            result.largest_batch = max(result.largest_batch, len(ids))
            result.touched += retried
            result.skipped += len(skipped)
            gone = set(skipped)
            result.job_ids += [i for i in ids if i not in gone][: 100 - len(result.job_ids)]
            if on_batch is not None:
                await on_batch(result)
        return result

    async def cancel(
        self, flt: JobFilter, *, reason: str, on_batch: OnBatch | None = None
    ) -> BulkResult:
        """Cancel the unfinished jobs ``flt`` selects."""
        if flt.status == "failed":
            raise InvalidInput("failed jobs are finished already", field="status")
        result = BulkResult()
        s = self.queue.settings
        k = self.keys
        async for ids in self.pages(flt):
            result.pages += 1
            result.matched += len(ids)
            if not ids:
                continue
            async with self.redis.pipeline(transaction=False) as pipe:
                for job_id in ids:
                    keys = [k.job(job_id), k.events(job_id), k.leases(), k.delayed(), k.finished()]
                    pipe.fcall(
                        "emp_cancel", len(keys), *keys, k.base, job_id, reason,
                        s.retention_seconds, s.events_maxlen,
                    )  # fmt: skip
                answers = await pipe.execute(raise_on_error=False)
            result.calls += 1
            result.largest_batch = max(result.largest_batch, len(ids))
            for job_id, answer in zip(ids, answers, strict=True):
                if isinstance(answer, Exception):
                    result.skipped += 1
                else:
                    result.touched += 1
                    if len(result.job_ids) < 100:
                        result.job_ids.append(job_id)
            if on_batch is not None:
                await on_batch(result)
        return result

    async def purge_dead(self, before: datetime) -> BulkResult:
        """Forget dead-lettered jobs that failed before ``before``: their records, streams and
        customer-index entries, a page at a time (the SQL archive is purged by its caller)."""
        result = BulkResult()
        k = self.keys
        cutoff = int(before.timestamp() * 1000)
        while True:
            ids = [
                text(m)
                for m in await self.redis.zrangebyscore(
                    k.dead(), "-inf", f"({cutoff}", start=0, num=self.batch
                )
            ]
            result.pages += 1
            if not ids:
                break
            async with self.redis.pipeline(transaction=False) as pipe:
                for job_id in ids:
                    pipe.hget(k.job(job_id), "customer_id")
                customers = await pipe.execute()
            async with self.redis.pipeline(transaction=False) as pipe:
                for job_id, customer in zip(ids, customers, strict=True):
                    pipe.delete(k.job(job_id), k.events(job_id))
                    if customer:
                        pipe.zrem(k.customer_jobs(text(customer)), job_id)
                pipe.zrem(k.dead(), *ids)
                await pipe.execute()
            result.calls += 1
            result.largest_batch = max(result.largest_batch, len(ids))
            result.matched += len(ids)
            result.touched += len(ids)
        return result
