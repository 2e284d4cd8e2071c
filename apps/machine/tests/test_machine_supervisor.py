"""The supervisor with tiny stand-in processes: restarts with backoff, giving up, and the
shutdown's escalation from SIGTERM to a second SIGTERM to SIGKILL."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from machine_helpers import eventually

from emp_core.registry.machines import SlotState
from emp_machine.config import Slot
from emp_machine.supervisor import RestartPolicy, Supervisor

SLOT = Slot("m1-simulation-0", "simulation", 0, None)


def _supervisor(
    code: str, *, policy: RestartPolicy, grace_s: float = 30.0, unwind_s: float = 10.0
) -> Supervisor:
    return Supervisor(
        [SLOT],
        command=[sys.executable, "-c", code],
        env_for=lambda slot: {**os.environ, "SLOT_ID": slot.worker_id},
        policy=policy,
        grace_s=grace_s,
        unwind_s=unwind_s,
    )


async def test_a_crashing_process_restarts_with_backoff_then_is_given_up() -> None:
    policy = RestartPolicy(base_s=0.05, max_restarts=3)
    sup = _supervisor("import sys; sys.exit(3)", policy=policy)
    async with asyncio.timeout(20):
        await sup.run()  # returns by itself: its only slot was given up
    (w,) = sup.workers
    assert (w.state, w.restarts, w.crashes_in_row, w.last_exit_code) == (SlotState.FAILED, 3, 4, 3)
    # The delays it waited between them double (the policy is pure: no clock asserted here).
    assert [policy.delay(n) for n in (1, 2, 3)] == [0.05, 0.1, 0.2]


async def test_a_process_that_ran_long_enough_starts_a_new_row(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    code = f"open({str(runs)!r}, 'a').write('x'); import time; time.sleep(0.3); exit(1)"
    sup = _supervisor(code, policy=RestartPolicy(base_s=0.01, max_restarts=1, stable_s=0.2))
    task = asyncio.create_task(sup.run())
    await eventually(lambda: _ready(runs, 4), within=20)
    (w,) = sup.workers
    assert w.state != SlotState.FAILED  # four exits, yet never two quick ones in a row
    assert w.crashes_in_row == 1
    sup.stop()
    await asyncio.wait_for(task, 10)
    assert w.state == SlotState.STOPPED


async def test_a_command_that_cannot_start_is_given_up() -> None:
    sup = Supervisor(
        [SLOT], command=["/nonexistent/emp-worker"], env_for=lambda slot: {},
        policy=RestartPolicy(base_s=0.01, max_restarts=2), grace_s=1,
    )  # fmt: skip
    await asyncio.wait_for(sup.run(), 10)
    (w,) = sup.workers
    assert (w.state, w.restarts, w.last_exit_code, w.pid) == (SlotState.FAILED, 2, None, None)


def _written(path: Path, count: int = 1) -> bool:
    return path.exists() and len(path.read_text()) >= count


async def _ready(path: Path, count: int = 1) -> bool:
    return await asyncio.to_thread(_written, path, count)


async def test_stop_escalates_to_sigkill_for_a_process_that_ignores_sigterm(
    tmp_path: Path,
) -> None:
    ready = tmp_path / "ready"
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        f"open({str(ready)!r}, 'w').write('x'); time.sleep(60)"
    )
    sup = _supervisor(code, policy=RestartPolicy(), grace_s=0.1, unwind_s=0.3)
    task = asyncio.create_task(sup.run())
    await eventually(lambda: _ready(ready), within=20)
    sup.stop()
    await asyncio.wait_for(task, 10)
    (w,) = sup.workers
    assert (w.state, w.last_exit_code) == (SlotState.STOPPED, -9)  # SIGKILL, not its own exit


async def test_a_second_stop_sends_the_second_sigterm_at_once(tmp_path: Path) -> None:
    """A worker drains on the first SIGTERM and hands its jobs back on the second; a second
    Ctrl-C must not wait for the grace period."""
    ready = tmp_path / "ready"
    code = (
        "import signal, sys, time\n"
        "seen = []\n"
        "def on_term(*_):\n"
        "    seen.append(1)\n"
        "    if len(seen) == 2: sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, on_term)\n"
        f"open({str(ready)!r}, 'w').write('x')\n"
        "while True: time.sleep(0.01)\n"
    )
    sup = _supervisor(code, policy=RestartPolicy(), grace_s=30)
    task = asyncio.create_task(sup.run())
    await eventually(lambda: _ready(ready), within=20)
    sup.stop()
    await asyncio.sleep(0.3)
    (w,) = sup.workers
    assert w.alive  # draining: it ignores the first SIGTERM within its grace period
    assert w.state == SlotState.STOPPING
    sup.stop()
    # Within 10 s although the grace period is 30: the second SIGTERM went at once, and the
    # child exits 0 only on its second SIGTERM.
    await asyncio.wait_for(task, 10)
    assert (w.state, w.last_exit_code) == (SlotState.STOPPED, 0)
