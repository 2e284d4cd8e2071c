"""One machine: its worker slots under a ``Supervisor``, and its status reported to Redis.

The status (``emp_core.registry.machines``) is written when the machine starts, on every change of a
worker (started, crashed, given up, stopping) and at least every ``status_interval_seconds``, so
readers can tell a quiet machine from a lost one. Redis being away does not stop the machine:
the workers go on, and the next report is tried on the next change or tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Mapping
from datetime import UTC, datetime

from redis.asyncio import Redis
from redis.exceptions import RedisError

from emp_core.queue.queue import Queue
from emp_core.queue.reaper import Reaper
from emp_core.redis.client import connect
from emp_core.redis.subscription import ShardSubscription
from emp_core.registry.control import CommandReply, reply
from emp_core.registry.machines import (
    CommandType,
    MachineCommand,
    MachineRegistry,
    MachineState,
    MachineStatus,
    SlotState,
)
from emp_core.security.envcrypt import KEY_ENV
from emp_machine import __version__
from emp_machine.config import MachineSettings, Slot
from emp_machine.supervisor import RestartPolicy, Supervisor

logger = logging.getLogger(__name__)

# How long the last report ("stopped") may take before the machine exits without it (seconds).
_FINAL_REPORT_SECONDS = 5.0


class Machine:
    """``await Machine(settings).run()`` until ``stop()``; returns the process exit code."""

    def __init__(
        self,
        settings: MachineSettings,
        *,
        base_env: Mapping[str, str] | None = None,
        redis: Redis | None = None,
    ) -> None:
        self.settings = settings
        self.id = settings.machine_id
        self.state = MachineState.STARTING
        self.started_at = datetime.now(UTC)
        self._redis = redis
        # The children's environment: the machine's own (with the decrypted variables in
        # env-file mode), never the env key: a worker has no use for it.
        env = dict(os.environ if base_env is None else base_env)
        env.pop(KEY_ENV, None)
        self._base_env = env
        s = settings
        self.supervisor = Supervisor(
            s.slots(),
            command=s.worker_command,
            env_for=self.worker_env,
            policy=RestartPolicy(
                base_s=s.restart_backoff_seconds,
                cap_s=s.restart_backoff_cap_seconds,
                max_restarts=s.max_restarts,
                stable_s=s.stable_seconds,
                jitter=s.restart_jitter,
            ),
            grace_s=s.grace_seconds,
            on_change=self._changed,
        )
        self._change = asyncio.Event()

    def worker_env(self, slot: Slot) -> dict[str, str]:
        """The whole environment of a slot's worker: who it is, where the queue is, its GPU."""
        s = self.settings
        env = dict(self._base_env)
        env.update(
            EMP_WORKER_ID=slot.worker_id,
            EMP_MACHINE_ID=self.id,
            EMP_SERVICES=slot.service,
            EMP_REDIS_URL=s.redis_url,
            EMP_QUEUE=s.queue,
            EMP_KEY_PREFIX=s.key_prefix,
            EMP_GRACE_SECONDS=str(s.grace_seconds),
        )
        if slot.gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = str(slot.gpu)
        return env

    def status(self) -> MachineStatus:
        return MachineStatus(
            machine_id=self.id,
            hostname=socket.gethostname(),
            pid=os.getpid(),
            version=__version__,
            gpus=self.settings.gpus,
            state=self.state,
            workers=[w.snapshot() for w in self.supervisor.workers],
            started_at=self.started_at,
            last_seen=datetime.now(UTC),
        )

    def stop(self) -> None:
        """Stop the workers (they drain); a second call hurries them. From the event loop."""
        if self.state != MachineState.STOPPED:
            self.state = MachineState.STOPPING
        self.supervisor.stop()
        self._changed()

    def _changed(self) -> None:
        self._change.set()

    async def run(self) -> int:
        s = self.settings
        redis = self._redis or connect(s.redis_url)
        registry = MachineRegistry(redis, s.keys, ttl_s=s.status_ttl_seconds)
        slots = self.supervisor.workers
        logger.info(
            "machine %s starting %d worker%s (%s) on %d GPU%s, queue %s",
            self.id, len(slots), "" if len(slots) == 1 else "s",
            ", ".join(w.slot.worker_id for w in slots), s.gpus, "" if s.gpus == 1 else "s",
            s.queue,
        )  # fmt: skip
        if self.state == MachineState.STARTING:
            self.state = MachineState.RUNNING
        reporter = asyncio.create_task(self._report_loop(registry), name=f"{self.id}-status")
        # Recovery must not depend on a live worker: the supervisor reaps too (one sweep per
        # interval across every process that runs the reaper).
        reaper = asyncio.create_task(
            Reaper(Queue(redis, s), owner=f"machine {self.id}").run(), name=f"{self.id}-reaper"
        )
        control = asyncio.create_task(self._control_loop(redis), name=f"{self.id}-control")
        try:
            await self.supervisor.run()
        finally:
            control.cancel()
            reaper.cancel()
            await asyncio.wait({reaper}, timeout=_FINAL_REPORT_SECONDS)
            # The reporter sees STOPPED, writes it and returns. It is not cancelled: redis-py
            # 8.1 can swallow a cancel that lands inside a pipeline, and the loop would go on.
            self.state = MachineState.STOPPED
            self._changed()
            await asyncio.wait({reporter}, timeout=_FINAL_REPORT_SECONDS)
            if not reporter.done():
                logger.warning("machine %s could not report that it stopped", self.id)
                reporter.cancel()
            if self._redis is None:
                await redis.aclose()
        if all(w.state == SlotState.FAILED for w in slots):
            logger.error(
                "machine %s: every worker was given up; exiting so the host can replace it",
                self.id,
            )
            return 1
        logger.info("machine %s stopped", self.id)
        return 0

    # --- the control channel (issue 17) -----------------------------------------------------------
    def handle(self, command: MachineCommand) -> CommandReply:
        """Carry out one operator command; the answer the sender is shown."""

        def answer(ok: bool, message: str, lines: list[str] | None = None) -> CommandReply:
            return CommandReply(
                command_id=command.command_id, ok=ok, message=message, lines=lines or []
            )

        sup = self.supervisor
        if command.type == CommandType.DRAIN:
            if sup.stopping:
                return answer(True, f"machine {self.id} is already draining")
            logger.info("machine %s draining on request", self.id)
            self.stop()
            return answer(
                True, f"machine {self.id} is draining: no new claims, running jobs finish"
            )
        if command.type == CommandType.RESTART_ALL:
            done = [w.slot.worker_id for w in sup.workers if sup.restart(w.slot.worker_id)]
            return answer(bool(done), f"restarting {len(done)} worker(s)", done)
        worker_id = command.worker_id or ""
        if sup.find(worker_id) is None:
            return answer(False, f"machine {self.id} has no worker {worker_id!r}")
        if command.type == CommandType.RESTART_WORKER:
            if sup.restart(worker_id):
                return answer(True, f"restarting worker {worker_id}")
            return answer(False, f"worker {worker_id} is not running")
        lines = sup.tail(worker_id, command.lines) or []
        return answer(True, f"the last {len(lines)} line(s) of worker {worker_id}", lines)

    async def _control_loop(self, redis: Redis) -> None:
        """Listen on the machine's command channel and answer each command."""
        keys = self.settings.keys
        while True:
            try:
                channels = [keys.machine_commands(self.id)]
                async with ShardSubscription(redis, channels) as subscription:
                    async for message in subscription.listen():
                        if message.get("type") != "smessage":
                            continue
                        try:
                            command = MachineCommand.model_validate_json(message["data"])
                        except ValueError as exc:
                            logger.warning("machine %s: a command it cannot read: %s", self.id, exc)
                            continue
                        await reply(redis, keys, self.handle(command))
            except (RedisError, OSError) as exc:
                logger.warning("machine %s: control channel lost (%s); again in 1 s", self.id, exc)
                await asyncio.sleep(1.0)

    async def _report_loop(self, registry: MachineRegistry) -> None:
        """Report now, then on each change or tick; return after reporting STOPPED."""
        failing = False
        while True:
            self._change.clear()  # before the report: a change from now on triggers another
            status = self.status()
            try:
                await registry.report(status)
                if failing:
                    logger.info("machine %s reports its status again", self.id)
                failing = False
            except (RedisError, OSError) as exc:
                if not failing:  # once per outage, not once per tick
                    logger.warning("machine %s cannot report its status: %s", self.id, exc)
                failing = True
            if status.state == MachineState.STOPPED:
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.status_interval_seconds):
                    await self._change.wait()
