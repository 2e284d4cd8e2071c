"""The `emp` command, run as a real subprocess against the test Redis."""

from __future__ import annotations

import asyncio
import os
import sys

from cli_helpers import emp as _emp

from emp_core.jobs.capabilities import WorkerCapabilities
from emp_core.queue.functions import LIBRARY_VERSION
from emp_core.queue.queue import ClaimedJob, Queue
from emp_core.settings import QueueSettings


async def _claim_once_submitted(queue: Queue) -> ClaimedJob:
    """Claim as a worker would, once the CLI (a slow-starting subprocess) has submitted."""
    caps = WorkerCapabilities(worker_id="w-cli", services=["simulation"])
    for _ in range(1200):
        if claimed := (await queue.claim(caps)).claimed:
            return claimed
        await asyncio.sleep(0.05)
    raise AssertionError("the CLI submitted nothing")


async def test_bad_input_exits_2_naming_the_field(queue: Queue, settings: QueueSettings) -> None:
    cases = {
        ("--payload", '{"a":'): "--payload is not valid JSON",
        ("--priority", "1001"): "priority",
        ("--requirements", '{"gpu": 1}'): "requirements.gpu",
    }
    for args, needle in cases.items():
        result = await asyncio.to_thread(_emp, settings, "submit", "--service", "simulation", *args)
        assert result.returncode == 2, result
        assert needle in result.stderr
    assert await queue.depth() == {}


async def test_submit_get_depth_cancel(queue: Queue, settings: QueueSettings) -> None:
    result = await asyncio.to_thread(
        _emp, settings, "submit", "--service", "simulation", "--count", "2"
    )
    assert result.returncode == 0, result.stderr
    ids = result.stdout.split()
    assert len(ids) == 2
    assert await queue.depth() == {"simulation": 2}

    shown = await asyncio.to_thread(_emp, settings, "get", ids[0], "--json")
    assert '"status": "pending"' in shown.stdout

    cancelled = await asyncio.to_thread(_emp, settings, "cancel", ids[0])
    assert "cancelled (it was pending)" in cancelled.stdout
    again = await asyncio.to_thread(_emp, settings, "cancel", ids[0])
    assert again.returncode == 2
    assert "already cancelled" in again.stderr
    assert await queue.depth() == {"simulation": 1}


async def test_submit_wait_follows_to_completion(queue: Queue, settings: QueueSettings) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "emp_cli.main", "submit", "--service", "simulation", "--wait",
        env={**os.environ, "EMP_REDIS_URL": settings.redis_url, "EMP_QUEUE": settings.queue},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    claimed = await _claim_once_submitted(queue)
    await queue.progress(claimed, 50, "halfway")
    await queue.complete(claimed, {"image": "done"})
    stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, stderr
    assert f"job {claimed.id} completed" in stdout.decode()
    assert "done" in stdout.decode()


async def test_functions_load_reports_version(settings: QueueSettings) -> None:
    result = await asyncio.to_thread(_emp, settings, "functions", "load")
    assert result.returncode == 0, result.stderr
    assert f"emp library v{LIBRARY_VERSION} loaded" in result.stdout


async def test_messages_are_never_read_as_markup(queue: Queue, settings: QueueSettings) -> None:
    missing = await asyncio.to_thread(_emp, settings, "get", "[/x]")
    assert missing.returncode == 2, missing.stderr
    assert "Traceback" not in missing.stderr
    assert "[/x]" in missing.stderr

    bad = await asyncio.to_thread(_emp, settings, "submit", "--service", "Not A Service!")
    assert bad.returncode == 2, bad.stderr
    assert "Traceback" not in bad.stderr
    # The pattern the service must match prints whole, brackets included.
    assert "[a-z0-9]" in bad.stderr


async def test_wait_summarises_images_in_the_result(queue: Queue, settings: QueueSettings) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "emp_cli.main", "submit", "--service", "simulation", "--wait",
        env={**os.environ, "EMP_REDIS_URL": settings.redis_url, "EMP_QUEUE": settings.queue},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    claimed = await _claim_once_submitted(queue)
    image = "data:image/png;base64," + "iVBORw0KGgo" * 3000
    await queue.complete(claimed, {"images": [image], "raw": "QUJD" * 500, "seed": 7})
    stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, stderr
    line = stdout.decode().splitlines()[-1]
    assert "iVBORw0KGgo" not in line
    assert "QUJD" not in line
    assert "<image/png, 24.8 kB as base64>" in line
    assert "<base64, 1.5 kB>" in line
    assert '"seed":7' in line
    assert len(line) < 300


async def test_fair_share_weights(queue: Queue, settings: QueueSettings) -> None:
    result = await asyncio.to_thread(_emp, settings, "fair-shares", "set", "acme", "3")
    assert result.returncode == 0, result.stderr
    assert await queue.redis.hget(queue.keys.fair_weights(), "acme") == b"3.0"
    listed = await asyncio.to_thread(_emp, settings, "fair-shares", "list")
    assert "acme" in listed.stdout
    refused = await asyncio.to_thread(_emp, settings, "fair-shares", "set", "acme", "0")
    assert refused.returncode == 2
    assert "weight" in refused.stderr
    reset = await asyncio.to_thread(_emp, settings, "fair-shares", "reset", "acme")
    assert reset.returncode == 0, reset.stderr
    assert await queue.redis.hlen(queue.keys.fair_weights()) == 0


async def test_a_routed_submit_is_found_without_naming_its_queue(
    queue: Queue, settings: QueueSettings, monkeypatch
) -> None:
    """EMP_QUEUE_ROUTES sends the job to its service's queue; get and cancel find it there."""
    sim = f"{settings.queue}-sim"
    monkeypatch.setenv("EMP_QUEUE_ROUTES", f"simulation={sim}")
    result = await asyncio.to_thread(_emp, settings, "submit", "--service", "simulation")
    assert result.returncode == 0, result.stderr
    job_id = result.stdout.strip()
    routed = Queue(queue.redis, settings.model_copy(update={"queue": sim}))
    assert await routed.depth() == {"simulation": 1}
    assert await queue.depth() == {}
    shown = await asyncio.to_thread(_emp, settings, "get", job_id, "--json")
    assert '"status": "pending"' in shown.stdout
    cancelled = await asyncio.to_thread(_emp, settings, "cancel", job_id)
    assert "cancelled (it was pending)" in cancelled.stdout
