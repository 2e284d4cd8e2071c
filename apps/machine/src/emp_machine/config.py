"""The machine's settings (``EMP_*`` variables and flags) and its plan: which worker runs where.

The spec of a machine is three variables::

    EMP_MACHINE_ID=salad-7f3a      # default: the host name
    EMP_GPUS=2                     # GPUs to hand out, one per worker slot (0: none assigned)
    EMP_WORKERS=simulation:2       # SERVICE:COUNT[,SERVICE:COUNT...]

Slot ``k`` (counting across services in the order given) gets GPU ``k mod EMP_GPUS`` through
``CUDA_VISIBLE_DEVICES``, so ``EMP_WORKERS=comfyui:2`` on ``EMP_GPUS=2`` puts one worker on
each GPU. Worker ids are ``{machine_id}-{service}-{index}``, ``index`` counting per service.
"""

from __future__ import annotations

import re
import shlex
import socket
import sys
from dataclasses import dataclass
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from emp_core.errors import InvalidInput
from emp_core.jobs.capabilities import Identifier
from emp_core.settings import QueueSettings

_SERVICE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_MAX_SLOTS = 64


def default_machine_id() -> str:
    """The host name, reduced to the characters an id may hold."""
    return re.sub(r"[^A-Za-z0-9_.:-]", "-", socket.gethostname()).strip("-.")[:100] or "machine"


@dataclass(frozen=True, slots=True)
class Slot:
    """One worker process the machine keeps running."""

    worker_id: str
    service: str
    index: int  # per service
    gpu: int | None  # None: no GPU assigned (EMP_GPUS=0)


def parse_workers(spec: str) -> list[tuple[str, int]]:
    """``"simulation:2,comfyui:1"`` -> ``[("simulation", 2), ("comfyui", 1)]``."""
    out: list[tuple[str, int]] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        service, _, count = part.partition(":")
        service, count = service.strip(), count.strip() or "1"
        if not _SERVICE.fullmatch(service):
            raise InvalidInput(
                f"EMP_WORKERS entry {part!r}: {service!r} is not a service name "
                "(lower-case letters, digits, _ and -)",
                field="workers",
            )
        if not count.isdigit() or int(count) < 1:
            raise InvalidInput(
                f"EMP_WORKERS entry {part!r}: the count must be a positive integer",
                field="workers",
            )
        if any(s == service for s, _ in out):
            raise InvalidInput(f"EMP_WORKERS names {service} twice", field="workers")
        out.append((service, int(count)))
    if not out:
        raise InvalidInput("EMP_WORKERS names no worker: write SERVICE:COUNT", field="workers")
    if (total := sum(n for _, n in out)) > _MAX_SLOTS:
        raise InvalidInput(f"EMP_WORKERS asks for {total} workers; at most {_MAX_SLOTS}")
    return out


def plan_slots(machine_id: str, workers: list[tuple[str, int]], gpus: int) -> list[Slot]:
    """The worker slots of a machine, with their ids and GPUs (round robin over ``gpus``)."""
    slots: list[Slot] = []
    for service, count in workers:
        for index in range(count):
            gpu = len(slots) % gpus if gpus > 0 else None
            slots.append(Slot(f"{machine_id}-{service}-{index}", service, index, gpu))
    return slots


class MachineSettings(QueueSettings):
    """Everything ``emp-machine`` needs: the queue's settings plus the machine's spec."""

    model_config = SettingsConfigDict(env_prefix="EMP_", env_file=".env", extra="ignore")

    machine_id: Identifier = Field(default_factory=default_machine_id)
    gpus: int = Field(default=0, ge=0, le=_MAX_SLOTS)
    workers: Annotated[list[tuple[str, int]], NoDecode] = Field(
        default_factory=lambda: [("simulation", 1)]
    )
    # The command of one worker; the machine adds its identity through the environment.
    worker_command: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: [sys.executable, "-m", "emp_worker.main"]
    )
    # Read by the workers too (same variable): how long a running job may finish after SIGTERM.
    grace_seconds: float = Field(default=30.0, ge=0)
    restart_backoff_seconds: float = Field(default=1.0, gt=0)
    # Well under the 30 s recovery bound (issue 10): a crash loop backs off to 10 s at most.
    restart_backoff_cap_seconds: float = Field(default=10.0, gt=0)
    # Crashes in a row (each within `stable_seconds` of its start) before a slot is given up;
    # a worker that ran `stable_seconds` starts a new row (its next restart waits the base).
    max_restarts: int = Field(default=10, ge=0)
    stable_seconds: float = Field(default=10.0, gt=0)
    # Restart delays are spread by up to this fraction either way.
    restart_jitter: float = Field(default=0.2, ge=0, le=1)
    status_interval_seconds: float = Field(default=10.0, gt=0, le=15)
    status_ttl_seconds: float = Field(default=600.0, gt=0)
    log_level: str = "INFO"

    @field_validator("workers", mode="before")
    @classmethod
    def _workers(cls, value: object) -> object:
        return parse_workers(value) if isinstance(value, str) else value

    @field_validator("worker_command", mode="before")
    @classmethod
    def _command(cls, value: object) -> object:
        return shlex.split(value) if isinstance(value, str) else value

    @field_validator("worker_command")
    @classmethod
    def _command_not_empty(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("the worker command is empty")
        return value

    def slots(self) -> list[Slot]:
        return plan_slots(self.machine_id, self.workers, self.gpus)
