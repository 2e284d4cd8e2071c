"""Settings of the API process, read from ``EMP_API_*`` environment variables.

The queue (``EMP_REDIS_URL``, ``EMP_QUEUE``, …) and the database (``EMP_DATABASE_URL``) have
settings classes of their own in ``emp_core``; this one holds what only the API needs.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ApiSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EMP_API_", env_file=".env", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    # Server processes; each holds its own Redis subscription and background tasks.
    processes: int = Field(default=1, ge=1)
    log_level: str = "info"
    # Larger than the payload limit (EMP_MAX_PAYLOAD_BYTES, 1 MB) so that an oversized payload
    # is refused by the queue with a message naming the field, and anything bigger here with 413.
    max_body_bytes: int = Field(default=2_000_000, gt=0)
    # A request's head must arrive within header_timeout_seconds of its first byte (or of the
    # connection), its body within body_timeout_seconds: slow clients cannot hold requests open.
    header_timeout_seconds: float = Field(default=10.0, gt=0)
    body_timeout_seconds: float = Field(default=30.0, gt=0)
    auth_cache_seconds: float = Field(default=5.0, ge=0)
    # Rate limits, as the ``limits`` library writes them ("30/minute;300/hour"; "" is off),
    # counted in Redis across every API process: requests with a bad token per client address,
    # and job submits per user (generous: it is there to stop a runaway client).
    token_failure_limits: str = "30/minute;300/hour"  # noqa: S105 - rates, not a secret
    submit_limits: str = "200/second"
    # A pending job's socket opened with ?position=1 looks at its place in line this often (s).
    ws_position_seconds: float = Field(default=5.0, gt=0)
    # Events a WebSocket may have waiting; past it, the oldest progress events are dropped.
    ws_backlog: int = Field(default=256, ge=8)
    # Serve /docs and /openapi.json (without a token: documentation, not data).
    docs: bool = True
    # FastAPI's native OpenTelemetry instrumentation (EMP_API_TELEMETRY=true to switch it on).
    telemetry: bool = False
    run_reaper: bool = True
    run_projector: bool = True
    archive_catch_up_seconds: float = Field(default=30.0, gt=0)
    archive_lease_seconds: float = Field(default=15.0, gt=0)
    # Error-pattern match counts move from Redis into SQL this often (any number of API
    # processes may do it at once; each count is folded exactly once).
    run_pattern_fold: bool = True
    pattern_fold_seconds: float = Field(default=10.0, gt=0)
    # gRPC beside HTTP (emp-api --grpc-port): off unless a port is given (0 picks a free one).
    grpc_port: int | None = Field(default=None, ge=0, le=65535)
    grpc_host: str = "127.0.0.1"
    # TLS when both are set (PEM files); plaintext otherwise.
    grpc_tls_cert: str | None = None
    grpc_tls_key: str | None = None
    # Larger messages are refused with RESOURCE_EXHAUSTED before they are parsed.
    grpc_max_message_bytes: int = Field(default=2_000_000, gt=0)
    # On shutdown, calls in flight get this long to finish.
    grpc_grace_seconds: float = Field(default=5.0, ge=0)
