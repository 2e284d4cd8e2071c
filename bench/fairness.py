"""``make bench-fair``: one customer's burst against another's trickle, fair shares off and on.

Customer A submits a backlog of 10,000 jobs at once; customer B submits one job a second. A
fleet of workers runs them (2 s each, ±10%); every submit, claim and completion is a real call
into the Lua library on a private redis-server, and time is simulated (a discrete-event
simulation: fairness reads no clock, so the simulation runs as fast as Redis answers). Wait is
submit to claim, in simulated seconds. The run lasts until B's last job is claimed.

Modes: ``off`` (``fair_scan`` 0: priority, then submit order) and ``on`` (the default settings),
then ``weighted``: A and C both hold backlogs, C with weight 3 (``FairShares.set_weight``), to
show a weighted split of the claims. Targets (issue 10, item 5): with fairness on, B's p95 wait at
most about one job's run time while A still gets every worker B does not need (no idle worker
while jobs wait); with weights, claims split by weight.

The LoRA affinity re-ranking is off here (``affinity_scan`` 0): these jobs have no LoRAs.
Also printed: the Redis commands one claim issues on average (``INFO commandstats``), off and on.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import itertools
import random
import statistics
import sys
import tempfile
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from emp_core.jobs.capabilities import WorkerCapabilities
from emp_core.queue.fairness import FairShares
from emp_core.queue.queue import ClaimedJob, Queue
from emp_core.redis.client import connect
from emp_core.redis.server import RedisServer
from emp_core.settings import QueueSettings

IGNORED = {"cmdstat_fcall", "cmdstat_info"}


@dataclass(frozen=True)
class Config:
    workers: int = 8
    run_s: float = 2.0
    backlog: int = 10_000
    trickle_jobs: int = 300  # B's jobs, one a second
    seed: int = 7


@dataclass
class Totals:
    waits: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    claims: Counter[str] = field(default_factory=Counter)
    idle_while_waiting: float = 0.0  # worker-seconds idle while a job was pending
    commands_per_claim: float = 0.0
    end_s: float = 0.0


class Fleet:
    """Workers that claim, run for ``run_s`` (simulated) and complete, claiming the next job in
    the same call, as ``emp-worker`` does."""

    def __init__(self, cfg: Config, queue: Queue) -> None:
        self.cfg = cfg
        self.queue = queue
        self.rng = random.Random(cfg.seed)
        self.events: list[tuple[float, int, str, Any]] = []
        self.order = itertools.count()
        self.now = 0.0
        self.submitted: dict[str, float] = {}
        self.idle: list[int] = list(range(cfg.workers))
        self.caps = [
            WorkerCapabilities(worker_id=f"w{i}", services=["simulation"])
            for i in range(cfg.workers)
        ]
        self.totals = Totals()
        self.pending = 0
        self.b_left = cfg.trickle_jobs
        self.submit_commands = 0

    def at(self, when: float, kind: str, data: Any) -> None:
        heapq.heappush(self.events, (when, next(self.order), kind, data))

    async def submit(self, customer: str, count: int) -> None:
        specs = [{"service": "simulation", "customer_id": customer}] * count
        before = await commands(self.queue)
        for start in range(0, count, 1000):
            for job_id in await self.queue.submit_many(specs[start : start + 1000]):
                self.submitted[job_id] = self.now
        self.submit_commands += await commands(self.queue) - before
        self.pending += count

    def started(self, w: int, claimed: ClaimedJob | None) -> None:
        if claimed is None:
            self.idle.append(w)
            return
        customer = claimed.job.customer_id or ""
        self.totals.waits[customer].append(self.now - self.submitted.pop(claimed.id))
        self.totals.claims[customer] += 1
        self.pending -= 1
        if customer == "b":
            self.b_left -= 1
        run = self.cfg.run_s * self.rng.uniform(0.9, 1.1)
        self.at(self.now + run, "done", (w, claimed))

    async def wake_idle(self) -> None:
        while self.idle and self.pending:
            w = self.idle.pop()
            self.started(w, (await self.queue.claim(self.caps[w])).claimed)
            if self.idle and self.idle[-1] == w:
                break  # nothing it can take: the others would find nothing either

    async def run(self, backlogs: dict[str, int], trickle: str | None) -> Totals:
        for customer, count in backlogs.items():
            await self.submit(customer, count)
        if trickle:
            for i in range(self.cfg.trickle_jobs):
                self.at(i + 0.5, "trickle", None)
        await self.wake_idle()
        last = 0.0
        # With a trickle: until its last job is claimed; else until half the jobs are.
        half = sum(backlogs.values()) // 2
        while self.events and (self.b_left > 0 if trickle else self.totals.claims.total() < half):
            when, _, kind, data = heapq.heappop(self.events)
            if self.pending:
                self.totals.idle_while_waiting += len(self.idle) * (when - last)
            self.now = last = when
            if kind == "trickle" and trickle:
                await self.submit(trickle, 1)
                await self.wake_idle()
            else:
                w, claimed = data
                result = await self.queue.complete(claimed, {}, then_claim=self.caps[w])
                self.started(w, result.claimed)
        self.totals.end_s = self.now
        return self.totals


async def run_mode(cfg: Config, redis_url: str, mode: str) -> Totals:
    settings = QueueSettings(
        redis_url=redis_url,
        queue=f"fair-{mode}",
        affinity_scan=0,
        fair_scan=0 if mode == "off" else QueueSettings().fair_scan,
    )
    redis = connect(redis_url)
    try:
        queue = Queue(redis, settings)
        await queue.functions.load()
        if mode == "weighted":
            await FairShares(redis, queue.keys).set_weight("c", 3)
            fleet = Fleet(cfg, queue)
            return await fleet.run({"a": cfg.backlog, "c": cfg.backlog}, None)
        fleet = Fleet(cfg, queue)
        before = await commands(queue)
        totals = await fleet.run({"a": cfg.backlog}, "b")
        # What is not a submit is a claim, alone or in the same call as the previous job's
        # completion (as emp-worker calls it).
        spent = await commands(queue) - before - fleet.submit_commands
        totals.commands_per_claim = spent / max(1, totals.claims.total())
        return totals
    finally:
        await redis.aclose()


async def commands(queue: Queue) -> int:
    """Commands Redis has run since start, those inside functions included (the bench's own
    private server: nobody else's)."""
    stats = await queue.redis.info("commandstats")
    return sum(int(s["calls"]) for name, s in stats.items() if name not in IGNORED)


def pct(values: list[float], q: int) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def render(console: Console, cfg: Config, results: dict[str, Totals]) -> None:
    table = Table(title=f"fair shares: A {cfg.backlog:,} jobs at once, B one a second; "
                  f"{cfg.workers} workers, {cfg.run_s:g} s jobs (simulated seconds)")  # fmt: skip
    for column in ("mode", "customer", "claimed", "wait p50", "wait p95", "wait max",
                   "idle worker-s while jobs waited", "Redis commands / job"):  # fmt: skip
        table.add_column(column, justify="left" if column in ("mode", "customer") else "right")
    for mode, totals in results.items():
        for customer in sorted(totals.waits):
            waits = totals.waits[customer]
            table.add_row(
                mode, customer, f"{totals.claims[customer]:,}", f"{pct(waits, 50):.2f} s",
                f"{pct(waits, 95):.2f} s", f"{max(waits):.2f} s",
                f"{totals.idle_while_waiting:.1f}",
                f"{totals.commands_per_claim:.1f}" if totals.commands_per_claim else "",
            )  # fmt: skip
    console.print(table)
    on = results.get("on")
    if on:
        p95 = pct(on.waits["b"], 95)
        verdict = "met" if p95 <= cfg.run_s * 1.1 else "missed"
        console.print(f"B's p95 wait with fairness on: {p95:.2f} s against one job's run time "
                      f"{cfg.run_s:g} s: {verdict}; idle worker-seconds while jobs waited: "
                      f"{on.idle_while_waiting:.1f}")  # fmt: skip
    weighted = results.get("weighted")
    if weighted:
        share = weighted.claims["c"] / max(1, weighted.claims.total())
        console.print(
            f"weighted (C weight 3, A weight 1, both with backlogs): C took {share:.1%} of "
            f"{weighted.claims.total():,} claims (target 75%)"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=Config.workers)
    parser.add_argument("--backlog", type=int, default=Config.backlog)
    parser.add_argument("--trickle", type=int, default=Config.trickle_jobs)
    parser.add_argument("--modes", default="off,on,weighted")
    args = parser.parse_args(argv)
    cfg = Config(workers=args.workers, backlog=args.backlog, trickle_jobs=args.trickle)
    console = Console(width=150)
    results: dict[str, Totals] = {}
    with tempfile.TemporaryDirectory(prefix="emp-bench-fair-") as folder:
        server = RedisServer(Path(folder)).start()
        try:
            for mode in args.modes.split(","):
                results[mode] = asyncio.run(run_mode(cfg, server.url, mode))
        finally:
            server.stop()
    render(console, cfg, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
