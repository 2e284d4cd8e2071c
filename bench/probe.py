"""Where the time of a measured stretch went: wall time, this process's CPU, the Redis server's CPU
and its per-command time (``INFO cpu`` / ``INFO commandstats``), and optionally every call's
server-side duration from a zero-threshold SLOWLOG, grouped by function.

Redis 7 logs the commands a function calls in the SLOWLOG too, just before the FCALL itself, so the
log also says how many commands each function call issued: the claim's work, counted."""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from bench.report import percentile

_SLOWLOG_MAX = 250_000


def _redis_cpu(info: dict[str, Any]) -> float:
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


@dataclass(slots=True)
class Probe:
    """``async with Probe(redis) as p: ...`` then ``p.summary``."""

    redis: Redis
    slowlog: bool = False
    summary: dict[str, Any] = field(default_factory=dict)
    _wall: float = 0.0
    _cpu: float = 0.0
    _redis_cpu: float = 0.0

    async def __aenter__(self) -> Probe:
        await self.redis.config_resetstat()
        if self.slowlog:
            await self.redis.config_set("slowlog-max-len", _SLOWLOG_MAX)
            await self.redis.config_set("slowlog-log-slower-than", 0)
            await self.redis.slowlog_reset()
        self._redis_cpu = _redis_cpu(await self.redis.info("cpu"))
        self._cpu = time.process_time()
        self._wall = time.perf_counter()
        return self

    async def __aexit__(self, *exc: object) -> None:
        wall = time.perf_counter() - self._wall
        cpu = time.process_time() - self._cpu
        redis_cpu = _redis_cpu(await self.redis.info("cpu")) - self._redis_cpu
        stats = await self.redis.info("commandstats")
        commands = {
            name.removeprefix("cmdstat_"): {
                "calls": int(v["calls"]),
                "usec": int(v["usec"]),
                "usec_per_call": float(v["usec_per_call"]),
            }
            for name, v in stats.items()
            if name.startswith("cmdstat_") and name not in ("cmdstat_info", "cmdstat_config")
        }
        fcall = commands.get("fcall", {})
        self.summary = {
            "wall_s": round(wall, 4),
            "client_cpu_s": round(cpu, 4),
            "redis_cpu_s": round(redis_cpu, 4),
            "client_cpu": round(cpu / wall, 3),
            "redis_cpu": round(redis_cpu / wall, 3),
            "fcalls": fcall.get("calls", 0),
            "fcall_s": round(fcall.get("usec", 0) / 1e6, 4),
            "commands": commands,
        }
        if self.slowlog:
            self.summary["server_us"] = await self._functions()
            await self.redis.config_set("slowlog-log-slower-than", 10_000)
            await self.redis.slowlog_reset()

    async def _functions(self) -> dict[str, dict[str, float]]:
        """Per function: server-side microseconds per call (p50/p99/mean) and the commands each
        call issued (mean and max), from the SLOWLOG."""
        entries = sorted(await self.redis.slowlog_get(_SLOWLOG_MAX), key=lambda e: int(e["id"]))
        durations: dict[str, list[float]] = defaultdict(list)
        issued: dict[str, list[int]] = defaultdict(list)
        nested = 0
        for entry in entries:
            words = _text(entry["command"]).split(" ", 2)
            if len(words) > 1 and words[0].upper() == "FCALL":
                durations[words[1]].append(float(entry["duration"]))
                issued[words[1]].append(nested)
                nested = 0
            else:
                nested += 1
        return {
            name: {
                "n": len(us),
                "p50": percentile(us, 0.5),
                "p99": percentile(us, 0.99),
                "mean": round(sum(us) / len(us), 1),
                "commands_mean": round(sum(issued[name]) / len(us), 1),
                "commands_max": max(issued[name]),
            }
            for name, us in sorted(durations.items())
        }
