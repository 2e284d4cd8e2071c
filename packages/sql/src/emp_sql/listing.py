"""A page of jobs, newest first, over every queue of a deployment (issue 13 item 2).

Each queue indexes a customer's jobs in ``Keys.customer_jobs``, scored by that queue's own submit
counter (``seq``). The counters of two queues do not compare (queue A's job 90 may be older than
queue B's job 7), so one number cannot say where a listing over several queues stopped. A listing
therefore keeps **one position per queue** and merges the queues' streams by the jobs' submit time
(``created_at``, the Redis clock at submit), a k-way merge:

- *every job exactly once*, whatever the clocks: each queue's stream is read strictly downward
  from its own position and a job leaves it only by being merged, so no job is skipped or
  repeated across pages, even if two queues' clocks disagree (that would only bend the order);
- *no migration*: the indexes, their scores and the archive's ``seq`` column stay as they are
  (a time-based score would rewrite every index and need a tie-break across queues in the score);
- *today's cursor where nothing changed*: with one queue the cursor is the plain number it always
  was (``"1234"``: the next page holds the jobs below that score), so existing clients keep
  working. With several queues it is ``name:n,name:n``: per queue, the exclusive upper bound of
  its next entries; a queue the cursor leaves out is finished. A malformed cursor, or one naming
  a queue this deployment does not have, is ``InvalidInput`` on ``cursor``.

The work of a request stays bounded: a filtered listing consumes at most ``LIST_BUDGET`` index
entries, then returns what it found with a cursor.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from emp_core.errors import InvalidInput
from emp_core.jobs.job import Job, JobStatus
from emp_core.queue.queue import Queue
from emp_core.redis import text, text_map
from emp_sql.job_archive import JobArchiveRepository
from emp_sql.session import Database

MAX_PAGE = 200
# A filtered listing reads at most this many of the owner's jobs per request; when it stops early
# it still returns a cursor, so the work of one request stays bounded however rare the match.
LIST_BUDGET = 1000
# The longest cursor accepted: 64 queues with long names fit.
CURSOR_MAX = 4096
_NUMBER = r"[0-9]{1,20}"
_PAIR = rf"[A-Za-z0-9_.-]{{1,128}}:{_NUMBER}"
# Both forms, for the API's query parameter: one queue's number, or ``name:n`` pairs.
CURSOR_PATTERN = rf"^(?:{_NUMBER}|{_PAIR}(?:,{_PAIR})*)$"
_FORM = re.compile(CURSOR_PATTERN)
_TOP = None  # a queue not read yet: from its newest entry


@dataclass(frozen=True, slots=True)
class JobPage:
    jobs: list[Job]
    next_cursor: str | None


def parse_cursor(
    cursor: str | None, names: Sequence[str], *, field: str = "cursor"
) -> dict[str, int | None]:
    """Per queue of ``names``, the exclusive upper bound of the entries still to list (``None``:
    from the newest; 0: finished). ``InvalidInput`` on ``field`` for a cursor this API did not
    return."""
    if cursor is None:
        return dict.fromkeys(names, _TOP)
    if len(cursor) > CURSOR_MAX or not _FORM.match(cursor):
        raise InvalidInput("is not a cursor this API returned", field=field)
    if ":" not in cursor:
        if len(names) > 1:
            raise InvalidInput(
                f"is a one-queue cursor, but jobs are listed over the queues {', '.join(names)}: "
                "list again without a cursor",
                field=field,
            )
        return {names[0]: int(cursor)}
    bounds: dict[str, int | None] = dict.fromkeys(names, 0)
    seen: set[str] = set()
    for pair in cursor.split(","):
        name, _, number = pair.rpartition(":")
        if name not in bounds:
            raise InvalidInput(
                f"names the queue {name}, which is not one of {', '.join(names)}", field=field
            )
        if name in seen:
            raise InvalidInput(f"names the queue {name} twice", field=field)
        seen.add(name)
        bounds[name] = int(number)
    return bounds


def format_cursor(bounds: dict[str, int]) -> str | None:
    """The cursor of the queues not finished (bound > 0); ``None`` when every one is."""
    left = {name: bound for name, bound in bounds.items() if bound > 0}
    if not left:
        return None
    if len(bounds) == 1:
        return str(next(iter(left.values())))
    return ",".join(f"{name}:{bound}" for name, bound in left.items())


@dataclass(slots=True)
class _Entry:
    seq: int
    job_id: str
    job: Job | None = None

    @property
    def when(self) -> float:
        # A job neither Redis nor the archive knows (purged) shows nothing: it is taken first,
        # which only moves its queue on.
        return float("inf") if self.job is None else self.job.created_at.timestamp()


@dataclass(slots=True)
class _Stream:
    """One queue's index entries for the listed customers, newest first."""

    queue: Queue
    keys: list[str]
    upper: int | None  # the exclusive bound of the next read; None: from the top
    done: bool = False  # nothing left below ``upper``
    buffer: deque[_Entry] = field(default_factory=deque)

    @property
    def bound(self) -> int:
        """Where this queue's part of the next page starts (exclusive), 0 when finished."""
        return self.buffer[0].seq + 1 if self.buffer else 0


class Listing:
    """One page of the jobs of ``customers`` in ``queues``, newest first, filtered."""

    def __init__(
        self,
        redis: Redis,
        database: Database,
        queues: Sequence[Queue],
        customers: Iterable[str],
        *,
        status: JobStatus | None = None,
        service: str | None = None,
        limit: int = 50,
    ) -> None:
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidInput(f"must be from 1 to {MAX_PAGE}", field="limit")
        self.redis = redis
        self.database = database
        self.queues = list(queues)
        self.customers = list(dict.fromkeys(customers))
        self.status, self.service, self.limit = status, service, limit

    def _matches(self, job: Job) -> bool:
        return (self.status is None or job.status == self.status) and (
            self.service is None or job.service == self.service
        )

    async def page(self, cursor: str | None = None) -> JobPage:
        """The page after ``cursor`` (a ``next_cursor`` this returned), or the first page."""
        bounds = parse_cursor(cursor, [q.keys.queue for q in self.queues])
        streams = [
            _Stream(q, [q.keys.customer_jobs(c) for c in self.customers], bound, done=bound == 0)
            for q, bound in zip(self.queues, bounds.values(), strict=True)
        ]
        filtered = self.status is not None or self.service is not None
        jobs: list[Job] = []
        read = 0
        while True:
            want = self.limit - len(jobs) + 1 if not filtered else min(LIST_BUDGET - read, 200)
            await self._refill([s for s in streams if not s.buffer and not s.done], max(want, 1))
            heads = [s for s in streams if s.buffer]
            if not heads:
                return JobPage(jobs, None)
            if len(jobs) == self.limit or read >= LIST_BUDGET:
                return JobPage(jobs, format_cursor({s.queue.keys.queue: s.bound for s in streams}))
            # The newest head next; on equal times the earlier queue of the deployment's order.
            newest = max(heads, key=lambda s: s.buffer[0].when)
            entry = newest.buffer.popleft()
            read += 1
            if entry.job is not None and self._matches(entry.job):
                jobs.append(entry.job)

    async def _refill(self, streams: list[_Stream], want: int) -> None:
        """Read up to ``want`` entries more of each stream (one pipeline for all of them), and
        their jobs (one pipeline, then the archive for the ones Redis has forgotten)."""
        if not streams:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for s in streams:
                upper = "+inf" if s.upper is None else f"({s.upper}"
                for key in s.keys:
                    pipe.zrevrangebyscore(key, upper, "-inf", start=0, num=want, withscores=True)
            answers: list[Any] = await pipe.execute()
        fresh: list[tuple[_Stream, _Entry]] = []
        at = 0
        for s in streams:
            mine, at = answers[at : at + len(s.keys)], at + len(s.keys)
            # A customer that returned ``want`` entries may hold more below its last one, so the
            # merged order is complete only down to the highest such last score (the scores are
            # the queue's submit order: no two of its jobs share one).
            floor = max((int(a[-1][1]) for a in mine if len(a) == want), default=None)
            merged = sorted(
                ((int(score), text(member)) for a in mine for member, score in a
                 if floor is None or int(score) >= floor),
                reverse=True,
            )  # fmt: skip
            s.done = floor is None
            for seq, job_id in merged:
                entry = _Entry(seq, job_id)
                s.buffer.append(entry)
                fresh.append((s, entry))
            if merged:
                s.upper = merged[-1][0]
        found = await self._jobs([(s.queue, e.job_id) for s, e in fresh])
        for s, entry in fresh:
            entry.job = found.get((s.queue.keys.queue, entry.job_id))

    async def _jobs(self, wanted: list[tuple[Queue, str]]) -> dict[tuple[str, str], Job]:
        """Jobs by (queue, id): Redis first (one pipeline), the archive for those Redis has
        forgotten."""
        if not wanted:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for queue, job_id in wanted:
                pipe.hgetall(queue.keys.job(job_id))
            hashes = await pipe.execute()
        found: dict[tuple[str, str], Job] = {}
        missing: list[tuple[str, str]] = []
        for (queue, job_id), raw in zip(wanted, hashes, strict=True):
            if raw:
                found[queue.keys.queue, job_id] = Job.from_redis(text_map(raw))
            else:
                missing.append((queue.keys.queue, job_id))
        if missing:
            async with self.database.session() as session:
                archived = await JobArchiveRepository(session).get_many(i for _, i in missing)
            found.update({(q, i): archived[i] for q, i in missing if i in archived})
        return found
