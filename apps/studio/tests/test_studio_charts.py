"""The dashboard's charts of the last hour: the per-minute counters move with real jobs through
the Lua library and the reaper's depth sample, and the SVG says and draws those numbers."""

from __future__ import annotations

import re

import redis.asyncio as aioredis
from studio_helpers import Visitor

from emp_core.jobs.capabilities import WorkerCapabilities
from emp_core.jobs.job import JobSpec
from emp_core.queue.queue import Queue
from emp_core.queue.reaper import Reaper
from emp_studio.linechart import TOP


def _figure(html: str, key: str) -> str:
    found = re.search(rf'<figure [^>]*data-testid="chart-{key}">(.*?)</figure>', html, re.S)
    assert found, f"no {key} chart on the dashboard"
    return found[1]


def _desc(figure: str) -> str:
    found = re.search(r"<desc [^>]*>(.*?)</desc>", figure, re.S)
    assert found
    return found[1]


def _points(figure: str, series: str) -> list[tuple[float, float]]:
    line = re.search(rf'<g class="chart-line [^"]*" data-series="{series}">(.*?)</g>', figure, re.S)
    assert line, f"no {series} line"
    runs = re.findall(r'points="([^"]*)"', line[1])
    dots = re.findall(r'cx="([\d.]+)" cy="([\d.]+)"', line[1])
    pairs = [p.split(",") for run in runs for p in run.split()] + [list(d) for d in dots]
    return [(float(x), float(y)) for x, y in pairs]


async def test_the_charts_show_what_real_jobs_did(
    alice: Visitor, queue: Queue, redis: aioredis.Redis
) -> None:
    sim = WorkerCapabilities(worker_id="sim-0", services=["simulation"])
    for _ in range(3):
        await queue.submit(JobSpec(service="simulation", max_attempts=1))
    await queue.submit(JobSpec(service="sdxl"))  # nobody serves it: it waits
    for _ in range(2):
        claimed = (await queue.claim(sim)).claimed
        assert claimed is not None
        await queue.complete(claimed, None)
    broken = (await queue.claim(sim)).claimed
    assert broken is not None
    assert await queue.fail(broken, "CUDA out of memory", retryable=False) == "failed"
    assert await Reaper(queue, owner="test").tick()  # swept, so it sampled the depth

    html = (await alice.get("/")).text
    completed = _figure(html, "completed")
    assert "simulation 2 completed" in _desc(completed)
    assert "simulation 1 failed for good, 0 retried" in _desc(_figure(html, "failed"))
    assert "sdxl 1 waiting at the last sample" in _desc(_figure(html, "depth"))
    assert "simulation 0 waiting at the last sample" in _desc(_figure(html, "depth"))
    assert "on average over 3 jobs" in _desc(_figure(html, "wait"))
    # Drawn, not only said: the busiest minute of completions touches the axis' top, quiet
    # minutes lie on the baseline, and the top label is that minute's count.
    points = _points(completed, "simulation")
    assert len(points) == 60
    assert min(y for _, y in points) == TOP
    assert sum(1 for _, y in points if y > TOP) >= 58
    top_label = re.findall(r'class="chart-label">(\d+)</text>', completed)
    assert top_label[-1] in {"1", "2"}  # 2 in one minute, or 1 and 1 across a minute's end
    # Named for assistive technology: the svg points at its own title and description.
    labelled = re.search(r'<svg [^>]*aria-labelledby="([^"]+)"', completed)
    assert labelled
    for ident in labelled[1].split():
        assert f'id="{ident}"' in completed


async def test_no_jobs_no_lines(alice: Visitor) -> None:
    html = (await alice.get("/")).text
    for key in ("depth", "completed", "failed", "wait"):
        figure = _figure(html, key)
        assert "No jobs this hour" in figure
        assert "nothing in this hour" in _desc(figure)
