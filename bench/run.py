"""``uv run python -m bench``: start a private redis-server, run every measurement, print the table,
write ``bench/results/latest.json``.

Rates are the median of ``--repeat`` runs (3 by default), each on a fresh queue: these machines
are shared, and one run can lose a core to a neighbour. The "of FCALL ceiling" column reads each
figure against a trivial function on the same Redis, called the same way from this process: a rate
as (FCALLs it issues per second) ÷ (trivial FCALLs per second one at a time, from as many
coroutines, or pipelined); a latency as (trivial FCALL round trip at the same percentile) ÷ (the
figure). 100% would mean the queue costs nothing beyond the round trip.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from rich.console import Console

import bench.api
import bench.fleet
from bench import scenarios
from bench.report import Figure, machine, render, write_json
from emp_core.queue.queue import Queue
from emp_core.redis.client import connect
from emp_core.redis.server import RedisServer
from emp_core.settings import QueueSettings

RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"
WORKERS = (1, 4, 16, 64)


@dataclass(frozen=True, slots=True)
class Sizes:
    """How much work each measurement does."""

    repeat: int = 3
    ceiling_calls: int = 10_000
    submit_one: int = 8_000
    submit_bulk: int = 40_000
    bulk_batch: int = 1_000
    drain_jobs: int = 8_000
    deep: int = 100_000
    shallow: int = 100
    claim_samples: int = 5_000
    wake_samples: int = 1_000
    wake_gap_s: float = 0.002
    classes: int = 100_000
    class_samples: int = 3_000
    idle_workers: int = 1_000


QUICK = Sizes(
    repeat=1, ceiling_calls=2_000, submit_one=2_000, submit_bulk=10_000, drain_jobs=2_000,
    deep=20_000, claim_samples=1_000, wake_samples=200, classes=10_000, class_samples=1_000,
    idle_workers=200,
)  # fmt: skip


async def _median_of(times: int, run: Callable[[], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
    """Run ``times`` times; the run with the median rate, with every run's rate beside it."""
    runs = [await run() for _ in range(times)]
    runs.sort(key=lambda r: r["rate"])
    return {**runs[len(runs) // 2], "rates": [round(r["rate"]) for r in runs]}


async def measure(url: str, port: int, sizes: Sizes, console: Console) -> dict[str, Any]:
    redis = connect(url)
    counter = iter(range(10_000))

    async def fresh_queue() -> Queue:
        await redis.flushall()
        queue = Queue(redis, QueueSettings(redis_url=url, queue=f"bench{next(counter)}"))
        await queue.functions.load()
        gc.collect()
        return queue

    raw: dict[str, Any] = {}
    n = sizes.repeat
    with console.status("") as step:
        step.update("trivial FCALL: one at a time, concurrent, pipelined")
        await fresh_queue()
        raw["fcall_sequential"] = await _median_of(
            n, lambda: scenarios.fcall_sequential(redis, calls=sizes.ceiling_calls)
        )
        for c in WORKERS[1:]:
            raw[f"fcall_concurrent_{c}"] = await _median_of(
                n,
                lambda c=c: scenarios.fcall_concurrent(  # type: ignore[misc]
                    redis, calls=sizes.ceiling_calls, coroutines=c
                ),
            )
        raw["fcall_pipelined"] = await _median_of(
            n, lambda: scenarios.fcall_pipelined(redis, calls=4 * sizes.ceiling_calls, batch=1000)
        )
        step.update("redis-benchmark FCALL")
        raw["redis_benchmark"] = await asyncio.to_thread(scenarios.redis_benchmark, port)

        step.update("submit, one at a time")
        raw["submit_one"] = await _median_of(
            n,
            lambda: fresh_queue_then(fresh_queue, scenarios.submit_one_at_a_time,
                                     jobs=sizes.submit_one),
        )  # fmt: skip
        step.update("submit_many")
        raw["submit_bulk"] = await _median_of(
            n,
            lambda: fresh_queue_then(fresh_queue, scenarios.submit_bulk,
                                     jobs=sizes.submit_bulk, batch=sizes.bulk_batch),
        )  # fmt: skip
        for w in WORKERS:
            step.update(f"claim+complete, {w} coroutines")
            raw[f"drain_{w}"] = await _median_of(
                n,
                lambda w=w: fresh_queue_then(  # type: ignore[misc]
                    fresh_queue, scenarios.claim_complete, workers=w, jobs=sizes.drain_jobs
                ),
            )
        step.update(f"claim latency, {sizes.shallow:,} and {sizes.deep:,} pending")
        await fresh_queue()
        queues = {
            name: (Queue(redis, QueueSettings(redis_url=url, queue=name)), depth)
            for name, depth in (("claim_shallow", sizes.shallow), ("claim_deep", sizes.deep))
        }
        raw.update(
            await scenarios.claim_latency(queues, samples=sizes.claim_samples, seed=sizes.deep)
        )
        step.update("submit to claimed, one process")
        raw["wake_in_process"] = await scenarios.submit_to_claimed_in_process(
            await fresh_queue(), samples=sizes.wake_samples, gap_s=sizes.wake_gap_s
        )
        step.update("submit to claimed, worker process")
        raw["wake_across"] = await scenarios.submit_to_claimed_across_processes(
            await fresh_queue(), url, samples=sizes.wake_samples, gap_s=sizes.wake_gap_s
        )
        for n in (0, 10, sizes.classes):
            step.update(f"claim with {n:,} classes pending, none runnable")
            raw[f"classes_{n}"] = await bench.fleet.classes_claim(
                redis, url, n, sizes.class_samples
            )
        step.update(f"one submit with {sizes.idle_workers:,} idle workers")
        raw["idle_fleet"] = await bench.fleet.idle_fleet(redis, url, sizes.idle_workers)
        step.update("HTTP API: submit throughput, progress to 1,000 sockets")
        await redis.flushall()
        raw["api"] = await bench.api.measure(url, quick=sizes is QUICK)
    raw["redis_info"] = await redis.info("server")
    await redis.aclose()
    return raw


async def fresh_queue_then(
    fresh_queue: Callable[[], Awaitable[Queue]],
    scenario: Callable[..., Awaitable[dict[str, Any]]],
    **kwargs: Any,
) -> dict[str, Any]:
    return await scenario(await fresh_queue(), **kwargs)


# --- figures --------------------------------------------------------------------------------------
def _cpu(res: dict[str, Any], per: str = "job") -> str:
    return (
        f"CPU/{per}: python {res['client_us_per_job']:.0f} µs, "
        f"redis {res['redis_us_per_job']:.0f} µs"
    )


def _cost_note(res: dict[str, Any], per: str = "job") -> str:
    """CPU per job on each side, and the spread of the repeated runs."""
    low, high = res["rates"][0], res["rates"][-1]
    return f"{_cpu(res, per)} · runs {low:,}–{high:,}" if len(res["rates"]) > 1 else _cpu(res, per)


def _server_note(res: dict[str, Any], function: str) -> str:
    stats = res["server"].get(function)
    if not stats:
        return ""
    return (
        f"in Redis: p50 {stats['p50']:.0f} µs, p99 {stats['p99']:.0f} µs, "
        f"{stats['commands_mean']:.0f} commands"
    )


def figures(raw: dict[str, Any]) -> list[Figure]:
    seq = raw["fcall_sequential"]
    rate_of = {1: seq["rate"], **{c: raw[f"fcall_concurrent_{c}"]["rate"] for c in WORKERS[1:]}}
    pipelined = raw["fcall_pipelined"]
    us = 1000  # ms -> µs
    out = [
        Figure("fcall_sequential", "FCALL noop, one at a time", seq["rate"], "calls/s",
               note=f"RTT p50 {seq['p50_ms'] * us:.0f} µs, p99 {seq['p99_ms'] * us:.0f} µs · "
                    f"{_cpu(seq, 'call')}"),
        Figure("fcall_concurrent_64", "FCALL noop, 64 coroutines", rate_of[64], "calls/s",
               note=_cost_note(raw["fcall_concurrent_64"], "call")),
        Figure("fcall_pipelined", "FCALL noop, pipelined ×1000", pipelined["rate"], "calls/s",
               note=_cost_note(pipelined, "call")),
    ]  # fmt: skip
    if raw.get("redis_benchmark"):
        out.append(
            Figure("fcall_redis_benchmark", "FCALL noop, redis-benchmark -c50",
                   raw["redis_benchmark"], "calls/s", note="the server alone, no Python client")
        )  # fmt: skip

    one, bulk = raw["submit_one"], raw["submit_bulk"]
    out += [
        Figure("submit_one", "submit, one at a time", one["rate"], "jobs/s", 8_000,
               one["rate"] / seq["rate"], _cost_note(one)),
        Figure("submit_bulk", f"submit_many, {bulk['batch']} per call", bulk["rate"], "jobs/s",
               40_000, bulk["rate"] / pipelined["rate"], _cost_note(bulk)),
    ]  # fmt: skip
    for w in WORKERS:
        drain = raw[f"drain_{w}"]
        label = f"claim+complete, {w} coroutine" + ("s" if w > 1 else "")
        out.append(
            Figure(f"claim_complete_{w}", label, drain["rate"], "jobs/s", 4_500,
                   2 * drain["rate"] / rate_of[w], _cost_note(drain))
        )  # fmt: skip

    shallow, deep = raw["claim_shallow"], raw["claim_deep"]
    for name, res, p99_target in (("100", shallow, None), ("100k", deep, 1.0)):
        depth = f"{res['pending']:,} pending"
        out += [
            Figure(f"claim_p50_{name}", f"claim p50, {depth}", res["p50_ms"], "ms", None,
                   seq["p50_ms"] / res["p50_ms"], _server_note(res, "emp_claim")),
            Figure(f"claim_p99_{name}", f"claim p99, {depth}", res["p99_ms"], "ms", p99_target,
                   seq["p99_ms"] / res["p99_ms"],
                   f"{res['matchable']:,} of them claimable by it · max {res['max_ms']:.2f} ms"),
        ]  # fmt: skip
    out.append(
        Figure("claim_p99_ratio", f"claim p99, {deep['pending']:,} ÷ {shallow['pending']:,}",
               deep["p99_ms"] / shallow["p99_ms"], "×", 2.0)
    )  # fmt: skip

    for key, label in (("wake_in_process", "1 process"), ("wake_across", "2 processes")):
        res = raw[key]
        out += [
            Figure(f"{key}_p50", f"submit→claimed p50, {label}", res["p50_ms"], "ms", 1.5,
                   seq["p50_ms"] / res["p50_ms"], "idle slot waits on its Waker (pub/sub)"),
            Figure(f"{key}_p99", f"submit→claimed p99, {label}", res["p99_ms"], "ms", 4.0,
                   seq["p99_ms"] / res["p99_ms"], f"max {res['max_ms']:.2f} ms"),
        ]  # fmt: skip
    if "idle_fleet" in raw:
        out += _fleet_figures(raw, seq)
    if "api" in raw:
        out += bench.api.figures(raw["api"])
    return out


def _fleet_figures(raw: dict[str, Any], seq: dict[str, Any]) -> list[Figure]:
    """Issue 10: the claim against the number of classes, and one submit's cost with an idle
    fleet."""
    keys = sorted((k for k in raw if k.startswith("classes_")), key=lambda k: int(k.split("_")[1]))
    empty = raw[keys[0]]
    out = []
    for key in keys:
        res = raw[key]
        n = res["classes"]
        what = "an empty queue" if n == 0 else f"{n:,} pending in {n:,} classes, none runnable"
        p99_target = 1.0 if n == max(raw[k]["classes"] for k in keys) else None
        out += [
            Figure(f"claim_classes_p50_{n}", f"claim p50, {what}", res["p50_ms"], "ms", None,
                   seq["p50_ms"] / res["p50_ms"]),
            Figure(f"claim_classes_p99_{n}", f"claim p99, {what}", res["p99_ms"], "ms",
                   p99_target, seq["p99_ms"] / res["p99_ms"],
                   f"first claim of the profile (matches every class once) "
                   f"{res['first_claim_ms']:.1f} ms"),
        ]  # fmt: skip
    top = raw[keys[-1]]
    out.append(
        Figure("claim_classes_p99_ratio",
               f"claim p99, {top['classes']:,} classes ÷ empty",
               top["p99_ms"] / empty["p99_ms"], "×", 2.0)
    )  # fmt: skip
    fleet = raw["idle_fleet"]
    out.append(
        Figure("wake_workers_per_submit",
               f"workers woken by one submit, {fleet['workers']:,} idle",
               fleet["workers_woken"], "workers", 1,
               note=f"{fleet['claims_triggered']} claims, {fleet['fcalls']} FCALLs, "
                    f"{fleet['commands']} Redis commands inside them")
    )  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small run, for a smoke test")
    parser.add_argument("--repeat", type=int, help="runs per rate (median); default 3, quick 1")
    parser.add_argument(
        "--out", type=Path, default=RESULTS, help=f"JSON output (default {RESULTS})"
    )
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else Sizes()
    if args.repeat:
        sizes = replace(sizes, repeat=args.repeat)
    # SIGTERM unwinds like Ctrl-C, so the private redis-server is stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    console = Console()
    if not console.is_terminal or console.width < 170:
        console = Console(width=170)  # one line per figure, in a terminal and in CI logs alike
    load_before = os.getloadavg()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="emp-bench-") as directory:
        server = RedisServer(Path(directory))
        with server:
            raw = asyncio.run(measure(server.url, server.port, sizes, console))
    env = machine(raw.pop("redis_info"))
    env["duration_s"] = round(time.perf_counter() - started, 1)
    env["load_average_before"] = [round(x, 2) for x in load_before]
    env["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    result = figures(raw)
    render(result, env, console)
    if load_before[0] > 0.5:
        console.print(
            f"[yellow]The machine was busy before the run (1-minute load {load_before[0]:.2f} on "
            f"{env['cpu_cores']} cores): other processes shared the CPU; figures may read low.[/]"
        )
    write_json(args.out, result, env, {"sizes": asdict(sizes), "raw": raw})
    console.print(f"took {env['duration_s']} s; wrote {args.out}")
    return 0
