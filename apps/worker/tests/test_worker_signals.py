"""``emp-worker`` as a real process: SIGTERM drains within the grace period, then hands back."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from worker_helpers import eventually, job_events, worker_command, worker_env

from emp_core.jobs.job import JobStatus
from emp_core.queue.queue import Queue


@contextmanager
def worker_process(settings, log: Path, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            worker_command(*args), env=worker_env(settings), stdout=out, stderr=subprocess.STDOUT
        )
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


async def _wait_exit(proc: subprocess.Popen[bytes], within: float = 20) -> int:
    return await asyncio.to_thread(proc.wait, within)


async def _running(queue: Queue, job_id: str) -> bool:
    return (await queue.get(job_id)).status is JobStatus.RUNNING


async def test_sigterm_past_the_grace_period_returns_the_job_to_pending(
    redis, queue: Queue, settings, tmp_path
):
    job_id = await queue.submit(
        {"service": "simulation", "payload": {"steps": 1000, "step_time": 0.05}}
    )
    worker_id = f"sig{uuid.uuid4().hex[:6]}"
    log = tmp_path / "worker.log"
    with worker_process(settings, log, "--worker-id", worker_id, "--grace", "0.3") as proc:
        await eventually(lambda: _running(queue, job_id), within=30)
        proc.send_signal(signal.SIGTERM)
        rc = await _wait_exit(proc)

    assert rc == 0, log.read_text()
    job = await queue.get(job_id)
    assert job.status is JobStatus.PENDING
    assert job.attempts == 0  # handed back: the attempt does not count
    assert job.worker_id is None
    last = (await job_events(redis, queue, job_id))[-1]
    assert (last["type"], last["reason"]) == ("requeued", "worker shutting down")
    assert not await redis.exists(queue.keys.worker(worker_id))
    assert await redis.zscore(queue.keys.workers(), worker_id) is None
    text = log.read_text()
    assert f"job {job_id} handed back to the queue by worker {worker_id}" in text


async def test_sigterm_lets_a_short_job_finish(redis, queue: Queue, settings, tmp_path):
    job_id = await queue.submit(
        {"service": "simulation", "payload": {"steps": 10, "step_time": 0.1}}
    )
    worker_id = f"sig{uuid.uuid4().hex[:6]}"
    log = tmp_path / "worker.log"
    with worker_process(settings, log, "--worker-id", worker_id, "--grace", "30") as proc:
        await eventually(lambda: _running(queue, job_id), within=30)
        proc.send_signal(signal.SIGTERM)
        rc = await _wait_exit(proc)

    assert rc == 0, log.read_text()
    job = await queue.get(job_id)
    assert (job.status, job.attempts) == (JobStatus.COMPLETED, 1)
    assert not await redis.exists(queue.keys.worker(worker_id))
    assert f"worker {worker_id} stops claiming" in log.read_text()


async def test_a_second_signal_hands_the_job_back_at_once(redis, queue: Queue, settings, tmp_path):
    job_id = await queue.submit(
        {"service": "simulation", "payload": {"steps": 1000, "step_time": 0.05}}
    )
    log = tmp_path / "worker.log"
    with worker_process(settings, log, "--grace", "300") as proc:
        await eventually(lambda: _running(queue, job_id), within=30)
        proc.send_signal(signal.SIGINT)
        await asyncio.sleep(0.2)
        assert proc.poll() is None  # draining: the grace period is five minutes
        proc.send_signal(signal.SIGINT)
        rc = await _wait_exit(proc)

    assert rc == 0, log.read_text()
    assert (await queue.get(job_id)).status is JobStatus.PENDING


def test_bad_flags_are_refused_with_a_message(settings, tmp_path):
    result = subprocess.run(
        worker_command("--slots", "0"),
        env=worker_env(settings),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "slots" in result.stderr
    assert "greater than or equal to 1" in result.stderr
