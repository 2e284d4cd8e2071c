"""The machine registry: which machine supervisors report, what their workers are doing, and
which machines have gone quiet.

A machine writes its whole status into the hash ``Keys.machine(id)`` every 10–15 s and on each
change, and indexes its id in ``Keys.machines()`` by report time (ms). The hash's TTL (10 min by
default) is much longer than the 30 s after which a silent machine reads as ``lost``: a rented
host vanishes without notice, and the dashboard should show it lost for a while, not just drop
it. The jobs of a lost machine come back through the lease reaper, not through this module.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum

import orjson
from pydantic import BaseModel, ConfigDict, Field, computed_field
from redis.asyncio import Redis
from redis.typing import EncodableT, FieldT

from emp_core.queue.keys import Keys
from emp_core.redis import text_list, text_map

LOST_AFTER_SECONDS = 30.0
STATUS_TTL_SECONDS = 600.0


class MachineState(StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    LOST = "lost"  # never written: read when the last report is older than the threshold


class SlotState(StrEnum):
    """A worker process slot as the supervisor sees it."""

    STARTING = "starting"
    RUNNING = "running"
    BACKOFF = "backoff"  # crashed; restarts after its backoff delay
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"  # crashed more often than the restart limit: given up


def _ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


def _from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


class MachineWorker(BaseModel):
    """One worker process slot of a machine."""

    model_config = ConfigDict(frozen=True)

    worker_id: str
    service: str
    index: int
    gpu: int | None = None
    state: SlotState
    pid: int | None = None
    restarts: int = 0
    last_exit_code: int | None = None
    started_at: datetime | None = None


class MachineStatus(BaseModel):
    """A machine as it last reported itself (``state`` reads ``lost`` once it went quiet)."""

    model_config = ConfigDict(frozen=True)

    machine_id: str
    hostname: str = ""
    pid: int = 0
    version: str = ""
    gpus: int = 0
    state: MachineState
    workers: list[MachineWorker] = Field(default_factory=list)
    started_at: datetime
    last_seen: datetime

    @computed_field  # type: ignore[prop-decorator]
    @property
    def uptime_s(self) -> float:
        """Seconds from start to the last report."""
        return max(0.0, (self.last_seen - self.started_at).total_seconds())

    @property
    def restarts(self) -> int:
        """Restarts of all its workers together."""
        return sum(w.restarts for w in self.workers)

    def to_redis(self) -> dict[FieldT, EncodableT]:
        return {
            "machine_id": self.machine_id,
            "hostname": self.hostname,
            "pid": self.pid,
            "version": self.version,
            "gpus": self.gpus,
            "state": self.state.value,
            "workers": orjson.dumps([w.model_dump(mode="json") for w in self.workers]),
            "started_at": _ms(self.started_at),
            "last_seen": _ms(self.last_seen),
        }

    @classmethod
    def from_redis(cls, fields: dict[str, str]) -> MachineStatus:
        return cls(
            machine_id=fields["machine_id"],
            hostname=fields.get("hostname", ""),
            pid=int(fields.get("pid") or 0),
            version=fields.get("version", ""),
            gpus=int(fields.get("gpus") or 0),
            state=MachineState(fields.get("state") or MachineState.RUNNING),
            workers=[MachineWorker.model_validate(w) for w in orjson.loads(fields["workers"])],
            started_at=_from_ms(int(fields.get("started_at") or 0)),
            last_seen=_from_ms(int(fields.get("last_seen") or 0)),
        )

    def seen_as(self, *, now: datetime, lost_after_s: float) -> MachineStatus:
        """This status as a reader at ``now`` sees it: ``lost`` when silent for too long."""
        quiet = (now - self.last_seen).total_seconds() > lost_after_s
        if quiet and self.state != MachineState.STOPPED:
            return self.model_copy(update={"state": MachineState.LOST})
        return self


class MachineRegistry:
    """Writes one machine's status; ``ttl_s`` is how long a silent machine stays listed."""

    def __init__(self, redis: Redis, keys: Keys, *, ttl_s: float = STATUS_TTL_SECONDS) -> None:
        self.redis = redis
        self.keys = keys
        self.ttl_ms = max(1, int(ttl_s * 1000))

    async def report(self, status: MachineStatus) -> None:
        """Write the whole status (it replaces the last one), extend the TTL, index the id."""
        key = self.keys.machine(status.machine_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            pipe.hset(key, mapping=status.to_redis())
            pipe.pexpire(key, self.ttl_ms)
            pipe.zadd(self.keys.machines(), {status.machine_id: _ms(status.last_seen)})
            await pipe.execute()

    async def remove(self, machine_id: str) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(self.keys.machine(machine_id))
            pipe.zrem(self.keys.machines(), machine_id)
            await pipe.execute()


async def list_machines(
    redis: Redis,
    keys: Keys,
    *,
    lost_after_s: float = LOST_AFTER_SECONDS,
    now: datetime | None = None,
) -> list[MachineStatus]:
    """Every machine whose status has not expired, most recent report first; a machine silent
    for more than ``lost_after_s`` reads as ``lost``. Ids whose hash expired leave the index."""
    now = now or datetime.now(UTC)
    ids = text_list(await redis.zrange(keys.machines(), 0, -1, desc=True))
    if not ids:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        for machine_id in ids:
            pipe.hgetall(keys.machine(machine_id))
        hashes = await pipe.execute()
    out: list[MachineStatus] = []
    gone: list[str] = []
    for machine_id, raw in zip(ids, hashes, strict=True):
        fields = text_map(raw)
        if "workers" not in fields:
            gone.append(machine_id)
            continue
        out.append(MachineStatus.from_redis(fields).seen_as(now=now, lost_after_s=lost_after_s))
    if gone:
        await redis.zrem(keys.machines(), *gone)
    return out


async def get_machine(
    redis: Redis, keys: Keys, machine_id: str, *, lost_after_s: float = LOST_AFTER_SECONDS
) -> MachineStatus | None:
    raw = await redis.hgetall(keys.machine(machine_id))
    fields = text_map(raw)
    if "workers" not in fields:
        return None
    status = MachineStatus.from_redis(fields)
    return status.seen_as(now=datetime.now(UTC), lost_after_s=lost_after_s)


class CommandType(StrEnum):
    DRAIN = "drain"  # finish running jobs, claim no more
    RESTART_WORKER = "restart_worker"
    RESTART_ALL = "restart_all"  # every worker of the machine, one after another
    LOGS = "logs"  # the last lines of one worker's output, from the supervisor's bounded tail


class MachineCommand(BaseModel):
    """A command to one machine, published on its channel (``Keys.machine_commands``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    command_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    type: CommandType
    worker_id: str | None = Field(default=None, max_length=128)
    lines: int = Field(default=100, ge=1, le=1000)  # for ``logs``


async def send_command(redis: Redis, keys: Keys, machine_id: str, command: MachineCommand) -> int:
    """Publish ``command`` to the machine; returns how many listeners heard it (0: none now).
    Sharded (SPUBLISH): the channel is in the queue's slot, and listeners SSUBSCRIBE."""
    return int(await redis.spublish(keys.machine_commands(machine_id), command.model_dump_json()))
