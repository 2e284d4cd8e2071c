"""Settings shared by every EMP process, read from ``EMP_*`` environment variables."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from emp_core.queue.keys import Keys

QUEUE_NAME = r"^[A-Za-z0-9_.-]+$"


def parse_routes(value: Any) -> Any:
    """``"sdxl=gpu-a, simulation=cpu"`` -> ``{"sdxl": "gpu-a", "simulation": "cpu"}``; a bad
    pair raises ``ValueError`` naming it (pydantic turns it into a clear settings error)."""
    if not isinstance(value, str):
        return value
    routes: dict[str, str] = {}
    for pair in filter(None, (p.strip() for p in value.split(","))):
        service, eq, queue = (part.strip() for part in pair.partition("="))
        if not (eq and service and re.match(QUEUE_NAME, queue)):
            raise ValueError(f"queue route {pair!r} is not SERVICE=QUEUE (QUEUE: {QUEUE_NAME})")
        routes[service] = queue
    return routes


class QueueSettings(BaseSettings):
    """Where the queue lives and how it treats jobs.

    Every duration is in seconds unless its name says ``_ms``.
    """

    model_config = SettingsConfigDict(env_prefix="EMP_", env_file=".env", extra="ignore")

    redis_url: str = "redis://127.0.0.1:6379/0"
    # A process's Redis connections: at most this many; a command finding none free waits up
    # to redis_pool_timeout_seconds for one (and only then fails) rather than failing at once.
    redis_max_connections: int = Field(default=64, ge=2)
    redis_pool_timeout_seconds: float = Field(default=20.0, gt=0)
    key_prefix: str = Field(default="emp", pattern=r"^[A-Za-z0-9_.-]+$")
    queue: str = Field(default="default", pattern=QUEUE_NAME)
    # Which queue a submit goes to, by service: ``sdxl=gpu-a,simulation=cpu``; a service not named
    # goes to ``queue``. By service because a queue's claim ranks only its own jobs: a service's
    # workers and its priority order then live together on one shard (README, "Redis Cluster").
    queue_routes: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    # After a submit, wait until this many replicas hold it (Redis WAIT) before answering: closes
    # the window in which a failover loses an acknowledged submit. 0: off (asynchronous).
    redis_wait_replicas: int = Field(default=0, ge=0, le=16)
    redis_wait_timeout_ms: int = Field(default=1000, ge=1, le=60_000)

    max_payload_bytes: int = Field(default=1_000_000, gt=0)
    lease_seconds: float = Field(default=10.0, gt=0)
    retry_base_seconds: float = Field(default=2.0, ge=0)
    retry_cap_seconds: float = Field(default=300.0, ge=0)
    # How long a retried job waits for some other worker before the one that failed may take it
    # again. Idle capable workers claim within milliseconds, so a couple of seconds is ample.
    retry_avoid_grace_seconds: float = Field(default=2.0, ge=0)
    retention_seconds: int = Field(default=7 * 24 * 3600, gt=0)
    events_maxlen: int = Field(default=1000, gt=0)
    # Every process runs the reaper about twice per interval; a lock key lets one sweep per
    # interval. A dead worker's job is back in the queue within lease + interval (15 s).
    reap_interval_seconds: float = Field(default=5.0, gt=0)
    # A lease that ran out costs no attempt; after this many the job fails, category ``lost``.
    max_lost_leases: int = Field(default=10, ge=0, le=1000)
    # Retry delays are spread by up to this fraction either way.
    retry_jitter: float = Field(default=0.2, ge=0, le=1)
    # LoRA affinity in the claim (ADR-010; the figures behind these defaults: make bench-affinity).
    # How many jobs of the best priority a claim ranks by the LoRAs the worker holds (0: off).
    affinity_scan: int = Field(default=16, ge=0, le=1000)
    # A job pending this long is taken before any job the worker holds LoRAs of (0: never).
    affinity_patience_seconds: float = Field(default=30.0, ge=0)
    # A job whose LoRAs an idle worker holds is left to it this long (the claim that leaves it
    # wakes that worker); a job whose LoRAs no idle worker holds is never held back.
    affinity_grace_seconds: float = Field(default=1.0, ge=0)
    # Hold a job for up to this long for a busy worker that holds its LoRAs (0: off, never
    # waits for a busy worker).
    affinity_window_seconds: float = Field(default=0.0, ge=0)
    # Fair shares between customers within a priority (issue 10; make bench-fair): how many
    # customers of a class a claim compares by share used (0: off, first submitted first).
    # Weights per customer: `emp fair-shares set` (the fair_weights hash), default 1.
    fair_scan: int = Field(default=8, ge=0, le=64)

    @field_validator("queue_routes", mode="before")
    @classmethod
    def _routes(cls, value: Any) -> Any:
        return parse_routes(value)

    @property
    def keys(self) -> Keys:
        return Keys(prefix=self.key_prefix, queue=self.queue)

    def queue_for(self, service: str) -> str:
        """The queue a job of ``service`` is submitted to."""
        return self.queue_routes.get(service, self.queue)

    @property
    def queue_names(self) -> list[str]:
        """Every queue this deployment names: the default first, then the routes' targets."""
        return list(dict.fromkeys([self.queue, *self.queue_routes.values()]))
