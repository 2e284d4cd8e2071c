"""``make bench-affinity``: what LoRA affinity in the claim saves, on a simulated fleet.

A fleet of GPU workers with LoRA caches serves users who submit batches of jobs using their own
LoRAs and popular shared ones. Every claim and completion goes through the real Lua library on a
private redis-server; the workers, their caches (LRU to a byte budget) and time are simulated: a
discrete-event simulation (``Fleet``) paced at ``--speedup`` times real time (by default 35% of
what this machine manages, measured first), because the Lua reads Redis's clock for a job's age
(patience, grace, window): the pace keeps those ages in step with the simulation.

The same workload (same seed: same users, LoRAs, sessions and warm caches) runs once per mode:

- ``off``: affinity_scan 0, the plain order (priority, then age);
- ``on``: the default settings (scan 16, grace 1 s, patience 30 s, no window);
- ``window``: the same plus ``--window`` seconds of affinity window (holds a job for a busy
  worker that holds its LoRAs).

Printed per mode: bytes downloaded (and the cut against ``off``), the bytes no placement could
have saved (files no worker held), the cache hit rate (LoRA uses served from the cache), p50/p95
queue wait (submit to claim) and job latency (submit to done), in simulated seconds. Targets:
≥ 70% fewer bytes than ``off`` with p95 queue wait within +10%.

Workload (defaults): 50 workers, 50 GB caches, 250 MB/s each; 3,000 users (activity Zipf 1.1),
each with 1-3 LoRAs of their own; 1,500 shared LoRAs (popularity Zipf 1.0); sizes log-normal
around 150 MB (20 MB to 1.5 GB). Users come in sessions (arriving at random): 5 requests on
average, 20 s apart, each a batch of 1-8 jobs with the session's LoRAs (their own with
probability 0.7, a shared one with 0.5, changed with 0.2 per request); 3-5 s of GPU time per
job; sessions arrive for 85% of the fleet's GPU time. Caches start warm, filled by 400 earlier
jobs each from the same distribution.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import heapq
import itertools
import random
import statistics
import sys
import tempfile
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from emp_core.jobs.capabilities import WorkerCapabilities
from emp_core.queue.queue import ClaimedJob, ClaimResult, Queue
from emp_core.redis.client import connect
from emp_core.redis.server import RedisServer
from emp_core.settings import QueueSettings

GB = 10**9
MB = 10**6
SESSION_REQUESTS = 5  # requests per session, on average
THINK_S = 20.0  # simulated seconds between a session's requests, on average
MEAN_BATCH = 20 / 6  # jobs per request: 1, 1, 2, 4, 4 or 8
MEAN_COMPUTE_S = 4.0  # GPU seconds per job: 3 to 5


@dataclass(frozen=True)
class Config:
    workers: int = 50
    cache_bytes: int = 50 * GB
    bandwidth: float = 250 * MB  # bytes per simulated second, per worker
    users: int = 3000
    shared: int = 1500
    jobs: int = 2000
    load: float = 0.85
    speedup: float = 0.0  # 0: measure how fast this machine simulates, and pace at 35% of it
    warm_jobs: int = 400
    window_s: float = 5.0
    seed: int = 7


@dataclass(frozen=True)
class Lora:
    sha: str
    size: int
    scope: str

    def ref(self) -> dict[str, Any]:
        return {
            "id": self.sha[:16], "name": f"{self.sha[:8]}.safetensors", "sha256": self.sha,
            "size": self.size, "scope": self.scope, "url": "http://blobs.invalid/x",
        }  # fmt: skip


class Workload:
    """Users, LoRAs and the requests (batches of jobs) of one run, from one seed."""

    def __init__(self, cfg: Config) -> None:
        rng = self.rng = random.Random(cfg.seed)
        self.cfg = cfg

        def lora(tag: str, scope: str) -> Lora:
            size = int(min(1500 * MB, max(20 * MB, rng.lognormvariate(18.8, 0.8))))
            return Lora(hashlib.sha256(tag.encode()).hexdigest(), size, scope)

        self.shared = [lora(f"shared-{i}", "shared") for i in range(cfg.shared)]
        self.own = [
            [lora(f"user-{u}-{j}", "user") for j in range(rng.choice((1, 1, 2, 3)))]
            for u in range(cfg.users)
        ]
        self.user_w = list(itertools.accumulate(_zipf(cfg.users, 1.1)))
        self.shared_w = list(itertools.accumulate(_zipf(cfg.shared, 1.0)))

    def session(self) -> list[tuple[float, list[Lora], int]]:
        """One user's session: requests (batches of jobs with the same LoRAs) at offsets from
        its start, the user iterating on prompts with their LoRA: 1 + geometric(1/5) requests,
        20 s of thinking between them on average; the shared LoRA changes with probability 0.2
        per request."""
        rng = self.rng
        user = rng.choices(range(self.cfg.users), cum_weights=self.user_w)[0]
        own = rng.choice(self.own[user]) if rng.random() < 0.7 else None

        def shared() -> Lora | None:
            if rng.random() < 0.5 or own is None:
                return rng.choices(self.shared, cum_weights=self.shared_w)[0]
            return None

        extra, out, t = shared(), [], 0.0
        while True:
            loras = [lo for lo in (own, extra) if lo is not None]
            out.append((t, loras, rng.choice((1, 1, 2, 4, 4, 8))))
            if rng.random() < 1 / SESSION_REQUESTS:
                return out
            t += rng.expovariate(1 / THINK_S)
            if rng.random() < 0.2:
                extra = shared()

    def schedule(self) -> list[tuple[float, list[Lora], int]]:
        """Requests totalling ``cfg.jobs`` jobs from sessions arriving at random, by time."""
        job_rate = self.cfg.load * self.cfg.workers / MEAN_COMPUTE_S  # jobs per second
        session_rate = job_rate / (SESSION_REQUESTS * MEAN_BATCH)
        out, t, total = [], 0.0, 0
        while total < self.cfg.jobs:
            t += self.rng.expovariate(session_rate)
            for offset, loras, batch in self.session():
                out.append((t + offset, loras, batch))
                total += batch
        out.sort(key=lambda r: r[0])
        return out


def _zipf(n: int, s: float) -> list[float]:
    return [1 / (i + 1) ** s for i in range(n)]


class SimCache:
    """A worker's LoRA cache as the simulation keeps it: LRU to a byte budget."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.files: OrderedDict[str, int] = OrderedDict()
        self.total = 0

    def touch(self, lora: Lora) -> tuple[bool, list[str]]:
        """Use a file: (was it held, hashes evicted to make room)."""
        if lora.sha in self.files:
            self.files.move_to_end(lora.sha)
            return True, []
        evicted = []
        while self.total + lora.size > self.budget and self.files:
            sha, size = self.files.popitem(last=False)
            self.total -= size
            evicted.append(sha)
        self.files[lora.sha] = lora.size
        self.total += lora.size
        return False, evicted


@dataclass
class Totals:
    bytes: int = 0
    cold_bytes: int = 0  # downloads of files no worker held: no placement could have saved them
    uses: int = 0
    hits: int = 0
    claims: int = 0
    waits: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    lag: float = 0.0  # how far the paced clock fell behind (real seconds, worst)
    simulated_s: float = 0.0
    real_s: float = 0.0


class Fleet:
    """A discrete-event simulation of the workers, claiming through the real Lua library.

    Events (arrivals, jobs finishing, idle workers' retries) are processed in simulated-time
    order by one coroutine; every claim and completion is a real call. Processing is paced at
    ``speedup`` times real time so that the Lua, which reads Redis's clock for a job's age (the
    patience and the window), sees ages in step with the simulation; ``lag`` says how far the
    pacing fell behind on a busy machine (ages then look older to the Lua than they are)."""

    def __init__(self, cfg: Config, queue: Queue, caches: list[SimCache], rng: random.Random):
        self.cfg, self.queue, self.caches, self.rng = cfg, queue, caches, rng
        self.caps = [
            WorkerCapabilities(worker_id=f"w{i}", services=["simulation"])
            for i in range(cfg.workers)
        ]
        self.totals = Totals()
        self.submitted: dict[str, float] = {}
        self.loras: dict[str, Lora] = {}
        self.idle: set[int] = set(range(cfg.workers))
        self.retry_token: dict[int, int] = {}
        self.events: list[tuple[float, int, str, Any]] = []
        self.seq = 0
        self.now = 0.0

    def at(self, when: float, kind: str, data: Any) -> None:
        self.seq += 1
        heapq.heappush(self.events, (when, self.seq, kind, data))

    async def run(self, schedule: list[tuple[float, list[Lora], int]]) -> Totals:
        for when, loras, batch in schedule:
            self.at(when, "arrive", (loras, batch))
        began = start = time.monotonic()
        while self.events:
            self.now, _, kind, data = heapq.heappop(self.events)
            ahead = began + self.now / self.cfg.speedup - time.monotonic()
            if ahead > 0:
                await asyncio.sleep(ahead)
            elif -ahead > 0.005:
                # Behind the pace: start the pace again from here, so that being slow once does
                # not make every later job look older to the Lua than it is.
                self.totals.lag = max(self.totals.lag, -ahead)
                began -= ahead
            if kind == "arrive":
                await self.arrive(*data)
            elif kind == "finish":
                await self.finish(*data)
            elif kind == "retry" and self.retry_token.get(data[0]) == data[1]:
                await self.offer([data[0]])
        self.totals.simulated_s = self.now
        self.totals.real_s = time.monotonic() - start
        return self.totals

    async def arrive(self, loras: list[Lora], batch: int) -> None:
        for lora in loras:
            self.loras[lora.sha] = lora
        spec = {"service": "simulation", "loras": [lo.ref() for lo in loras]}
        for job_id in await self.queue.submit_many([spec] * batch):
            self.submitted[job_id] = self.now
        idle = sorted(self.idle)
        self.rng.shuffle(idle)  # idle workers race for new work: any of them may win
        await self.offer(idle)

    async def offer(self, workers: list[int]) -> None:
        for w in workers:
            if w not in self.idle:
                continue
            result = await self.queue.claim(self.caps[w])
            self.totals.claims += 1
            if not await self.settle(w, result) and result.retry_in is None:
                return  # nothing is pending for anyone: the other idle workers would find none

    async def settle(self, w: int, result: ClaimResult) -> bool:
        """Start the claimed job, or leave the worker idle (retrying when the claim said when)."""
        if result.claimed is not None:
            self.idle.discard(w)
            await self.start(w, result.claimed)
            return True
        self.idle.add(w)
        if result.retry_in is not None:
            token = self.retry_token[w] = self.retry_token.get(w, 0) + 1
            self.at(self.now + max(result.retry_in, 0.001) * self.cfg.speedup, "retry", (w, token))
        return False

    async def start(self, w: int, claimed: ClaimedJob) -> None:
        t = self.totals
        t.waits.append(self.now - self.submitted[claimed.id])
        download, added, evicted = 0, [], []
        for ref in claimed.job.loras:
            held, gone = self.caches[w].touch(self.loras[ref.sha256])
            t.uses += 1
            t.hits += held
            if not held:
                download += ref.size
                added.append(ref.sha256)
                if not any(ref.sha256 in c.files for i, c in enumerate(self.caches) if i != w):
                    t.cold_bytes += ref.size
            evicted += gone
        if added or evicted:
            await self.advertise(f"w{w}", added, evicted)
        t.bytes += download
        compute = 3 + 2 * self.rng.random()  # GPU seconds
        self.at(self.now + download / self.cfg.bandwidth + compute, "finish", (w, claimed))

    async def finish(self, w: int, claimed: ClaimedJob) -> None:
        self.totals.latencies.append(self.now - self.submitted[claimed.id])
        result = await self.queue.complete(claimed, None, then_claim=self.caps[w])
        self.totals.claims += 1
        await self.settle(w, result)

    async def advertise(self, worker_id: str, added: list[str], evicted: list[str]) -> None:
        """What ``emp_core.loras.advert`` does for a real worker, by difference."""
        k, r = self.queue.keys, self.queue.redis
        async with r.pipeline(transaction=True) as pipe:
            if evicted:
                pipe.srem(k.worker_loras(worker_id), *evicted)
                for sha in evicted:
                    pipe.srem(k.lora_holders(sha), worker_id)
            if added:
                pipe.sadd(k.worker_loras(worker_id), *added)
                for sha in added:
                    pipe.sadd(k.lora_holders(sha), worker_id)
            await pipe.execute()


async def warm_caches(cfg: Config, work: Workload, queue: Queue) -> list[SimCache]:
    """Fill every cache by replaying earlier jobs, then advertise it (at most 512 hashes)."""
    caches = []
    for index in range(cfg.workers):
        cache = SimCache(cfg.cache_bytes)
        for _ in range(cfg.warm_jobs):  # one earlier job of each of as many sessions
            for lora in work.rng.choice(work.session())[1]:
                cache.touch(lora)
        caches.append(cache)
        held = list(cache.files)[-512:]
        k = queue.keys
        async with queue.redis.pipeline(transaction=False) as pipe:
            # A registered worker: the Lua marks it busy and idle, which the grace rule reads.
            pipe.hset(k.worker(f"w{index}"), mapping={"state": "idle"})
            pipe.sadd(k.worker_loras(f"w{index}"), *held)
            for sha in held:
                pipe.sadd(k.lora_holders(sha), f"w{index}")
            await pipe.execute()
    return caches


async def run_mode(cfg: Config, redis_url: str, mode: str) -> Totals:
    redis = connect(redis_url)
    await redis.flushall()
    scale = 1 / cfg.speedup  # simulated seconds -> real seconds, for the Lua's clock
    settings = QueueSettings(
        redis_url=redis_url, queue=f"affinity-{mode}", events_maxlen=10,
        affinity_scan=0 if mode == "off" else QueueSettings().affinity_scan,
        affinity_patience_seconds=QueueSettings().affinity_patience_seconds * scale,
        affinity_grace_seconds=QueueSettings().affinity_grace_seconds * scale,
        affinity_window_seconds=cfg.window_s * scale if mode == "window" else 0,
    )  # fmt: skip
    queue = Queue(redis, settings)
    await queue.functions.load()
    work = Workload(cfg)
    caches = await warm_caches(cfg, work, queue)
    schedule = work.schedule()
    totals = await Fleet(cfg, queue, caches, random.Random(cfg.seed + 1)).run(schedule)
    await redis.aclose()
    return totals


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if values else 0.0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.affinity", description=__doc__.split("\n")[0])
    p.add_argument("--jobs", type=int, default=Config.jobs)
    p.add_argument("--speedup", type=float, default=Config.speedup)
    p.add_argument("--window", type=float, default=Config.window_s, help="window (sim s)")
    p.add_argument("--modes", default="off,on,window")
    p.add_argument("--seed", type=int, default=Config.seed)
    p.add_argument("--load", type=float, default=Config.load, help="offered GPU load, 0-1")
    p.add_argument("--bandwidth-mb", type=float, default=Config.bandwidth / MB)
    args = p.parse_args(argv)
    cfg = Config(
        jobs=args.jobs, speedup=args.speedup, window_s=args.window, seed=args.seed,
        load=args.load, bandwidth=args.bandwidth_mb * MB,
    )  # fmt: skip
    console = Console(width=150)
    results: dict[str, Totals] = {}
    with tempfile.TemporaryDirectory(prefix="emp-bench-affinity-") as folder:
        server = RedisServer(Path(folder)).start()
        try:
            if cfg.speedup <= 0:
                # Unpaced, the simulation runs as fast as this machine allows; paced at 35% of
                # that, it keeps up, so job ages in the Lua match the simulation's.
                probe = replace(cfg, jobs=300, speedup=1e6)
                t = asyncio.run(run_mode(probe, server.url, "window"))
                cfg = replace(cfg, speedup=min(200.0, 0.35 * t.simulated_s / t.real_s))
                console.print(f"[dim]pacing at {cfg.speedup:.0f}× real time[/dim]")
            for mode in args.modes.split(","):
                began = time.monotonic()
                results[mode] = asyncio.run(run_mode(cfg, server.url, mode))
                lag = results[mode].lag
                t = results[mode]
                console.print(
                    f"[dim]{mode}: {time.monotonic() - began:.1f} s, {t.claims:,} claims, "
                    f"{t.simulated_s / t.real_s:.0f}× real time, pacing lag ≤ {lag:.2f} s[/dim]"
                )
        finally:
            server.stop()
    render(console, cfg, results)
    return 0


def render(console: Console, cfg: Config, results: dict[str, Totals]) -> None:
    base = results.get("off")
    table = Table(title=(
        f"LoRA affinity: {cfg.workers} workers × {cfg.cache_bytes // GB} GB caches, {cfg.jobs:,} "
        f"jobs, {cfg.users:,} users, {cfg.shared:,} shared LoRAs, load {cfg.load:.0%}, "
        f"{cfg.bandwidth / MB:g} MB/s (simulated seconds; window {cfg.window_s:g} s)"
    ))  # fmt: skip
    for name in ("mode", "downloaded", "vs off", "unavoidable", "hit rate", "wait p50", "wait p95",
                 "p95 vs off", "latency p50", "latency p95"):  # fmt: skip
        table.add_column(name, justify="left" if name == "mode" else "right")
    for mode, t in results.items():
        cut = f"{1 - t.bytes / base.bytes:+.0%}".replace("+", "−") if base and base.bytes else ""
        p95, base95 = pct(t.waits, 95), (pct(base.waits, 95) if base else 0)
        rel = f"{p95 / base95 - 1:+.0%}" if base and base95 else ""
        table.add_row(
            mode, f"{t.bytes / GB:,.1f} GB", cut if mode != "off" else "",
            f"{t.cold_bytes / GB:,.1f} GB",
            f"{t.hits / max(1, t.uses):.1%}", f"{pct(t.waits, 50):.2f} s", f"{p95:.2f} s",
            rel if mode != "off" else "", f"{pct(t.latencies, 50):.2f} s",
            f"{pct(t.latencies, 95):.2f} s",
        )  # fmt: skip
    console.print(table)
    if base is None or not base.bytes:
        return
    base95 = pct(base.waits, 95)
    for mode, t in results.items():
        if mode == "off":
            continue
        saved = 1 - t.bytes / base.bytes
        slower = pct(t.waits, 95) / base95 - 1 if base95 else 0.0
        console.print(
            f"{mode}: {saved:.0%} fewer bytes than off (target ≥ 70%: "
            f"{'met' if saved >= 0.7 else f'missed by {0.7 - saved:.0%} points'}); "
            f"p95 queue wait {slower:+.0%} (target ≤ +10%: {'met' if slower <= 0.1 else 'missed'})"
        )


if __name__ == "__main__":
    sys.exit(main())
