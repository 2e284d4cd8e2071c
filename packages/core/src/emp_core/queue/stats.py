"""Per-minute counters of a queue: what the studio dashboard's time-series charts draw.

Where they come from, all in one hash per minute (``Keys.minute_stats``, 25 h TTL), fields
``<metric>:<service>``:
- ``submitted``, ``completed``, ``failed`` (for good), ``retried``, ``cancelled``, and for first
  claims ``wait_ms`` (summed) and ``waited`` (counted): by the Lua library's ``tally``, inside
  the function that changes the job's state, so no job costs a round trip more;
- ``depth``: the pending jobs per service, sampled by the reaper's sweep (about once per reap
  interval, whichever EMP process sweeps: every worker, supervisor and API reaps); ``sampled``
  marks a minute that has a sample, so a service missing from it had none pending.

Reading an hour is one pipeline of 60 HGETALL: its cost depends on minutes and services, never on
the number of jobs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from redis.asyncio import Redis

from emp_core.queue.keys import Keys
from emp_core.redis import text_map

STATS_TTL_S = 25 * 3600  # the Lua's STATS_TTL_S: a day of minutes, and an hour to spare
MINUTE_MS = 60_000
SAMPLED = "sampled"


def minute_of(ms: int) -> int:
    """The minute (Unix ms // 60000) that a time in Unix ms falls in."""
    return ms // MINUTE_MS


@dataclass(frozen=True, slots=True)
class Minute:
    """One minute's counters: metric -> service -> value."""

    minute: int
    counts: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def sampled(self) -> bool:
        """Whether the pending depth was sampled in this minute."""
        return SAMPLED in self.counts

    def get(self, metric: str, service: str) -> int:
        return self.counts.get(metric, {}).get(service, 0)


def parse_minute(minute: int, fields: Mapping[str, str]) -> Minute:
    """A minute's hash as counters; fields that are not ``<metric>:<service>`` integers are
    skipped (nothing else writes there, but a reader should not fail on a stray field)."""
    counts: dict[str, dict[str, int]] = {}
    for name, value in fields.items():
        metric, _, service = name.partition(":")
        try:
            counts.setdefault(metric, {})[service] = int(value)
        except ValueError:
            continue
    return Minute(minute, counts)


@dataclass(frozen=True, slots=True)
class History:
    """The last minutes of a queue, oldest first, one entry per minute (empty ones included)."""

    minutes: list[Minute]

    @property
    def services(self) -> list[str]:
        """Every service that has a counter in these minutes, sorted."""
        names = {s for m in self.minutes for metric, by in m.counts.items() if metric != SAMPLED
                 for s in by}  # fmt: skip
        return sorted(n for n in names if n)

    def series(self, metric: str, service: str) -> list[int]:
        """One counter per minute (0 where nothing was counted)."""
        return [m.get(metric, service) for m in self.minutes]

    def depth(self, service: str) -> list[int | None]:
        """Pending jobs per minute, None for a minute with no sample."""
        return [m.get("depth", service) if m.sampled else None for m in self.minutes]

    def mean_wait_s(self, service: str) -> list[float | None]:
        """Mean seconds from submit to first claim of the jobs first claimed in each minute,
        None for a minute with no such claim."""
        out: list[float | None] = []
        for m in self.minutes:
            n = m.get("waited", service)
            out.append(m.get("wait_ms", service) / n / 1000 if n else None)
        return out


async def server_ms(redis: Redis) -> int:
    """Redis's clock in Unix ms: the clock the Lua counts by."""
    seconds, micros = await redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def history(redis: Redis, keys: Keys, *, now_ms: int, minutes: int = 60) -> History:
    """The ``minutes`` minutes ending with the one ``now_ms`` falls in (that one partial)."""
    last = minute_of(now_ms)
    span = range(last - minutes + 1, last + 1)
    async with redis.pipeline(transaction=False) as pipe:
        for minute in span:
            pipe.hgetall(keys.minute_stats(minute))
        rows = await pipe.execute()
    return History([parse_minute(m, text_map(raw)) for m, raw in zip(span, rows, strict=True)])


async def sample_depth(redis: Redis, keys: Keys) -> None:
    """Write every service's pending count (the ``pending_count`` hash the Lua keeps, zeros
    included, so a service that drained reads 0) into the current minute; a later sample in
    the same minute replaces it. Three round trips (a cluster client refuses TIME in a
    pipeline)."""
    key = keys.minute_stats(minute_of(await server_ms(redis)))
    raw = await redis.hgetall(keys.pending_count())
    depths = {f"depth:{s}": int(n) for s, n in text_map(raw).items()}
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hset(key, mapping={**depths, SAMPLED: 1})  # type: ignore[dict-item]
        pipe.expire(key, STATS_TTL_S)
        await pipe.execute()


def merged(histories: Sequence[History]) -> History:
    """Several queues' histories of the same minutes as one: every counter summed per minute
    (a deployment's dashboard over all its queues); one history is returned as it is."""
    if len(histories) == 1:
        return histories[0]
    minutes: list[Minute] = []
    for same in zip(*(h.minutes for h in histories), strict=True):
        counts: dict[str, dict[str, int]] = {}
        for m in same:
            for metric, by in m.counts.items():
                into = counts.setdefault(metric, {})
                for service, value in by.items():
                    into[service] = into.get(service, 0) + value
        minutes.append(Minute(same[0].minute, counts))
    return History(minutes)
