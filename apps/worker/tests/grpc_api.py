"""A real ``emp-api`` process serving gRPC, for running workers on the gRPC transport.

Started as a subprocess (apps never import each other, so the worker's tests do not import the
API), on a private SQLite file with one admin whose token the ``emp`` command issued, on the
test's Redis and a queue of its own. Its queue settings (lease, reaper, retry backoff) are the
server's: over gRPC the API runs the Lua on the worker's behalf.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc

from emp_core.redis.server import free_port

# Seconds the API may take to serve gRPC on a loaded 2-core machine.
_START_WITHIN = 90.0


@dataclass(frozen=True)
class GrpcApi:
    """A running API: where its gRPC port is, the queue it serves and an admin token."""

    address: str
    queue: str
    token: str
    log: Path


def _admin_token(environment: dict[str, str]) -> str:
    """Migrate the database and create an admin with the ``emp`` command, as an operator would;
    it prints the admin's first token."""
    emp = [sys.executable, "-m", "emp_cli.main"]
    subprocess.run([*emp, "db", "upgrade"], env=environment, check=True, capture_output=True)
    created = subprocess.run(
        [*emp, "users", "create", "--email", "worker-admin@example.com", "--admin",
         "--password", "worker tests only"],
        env=environment, check=True, capture_output=True, text=True,
    )  # fmt: skip
    return created.stdout.strip()


@contextlib.contextmanager
def grpc_api(
    redis_url: str, folder: Path, *, lease_seconds: float = 1.0, again: GrpcApi | None = None,
    **env: str,
) -> Iterator[GrpcApi]:  # fmt: skip
    """Serve the API's gRPC on a free port until the block ends (then SIGTERM, then SIGKILL);
    ``again``: a restart of that API (its port, queue, database and token)."""
    database_url = f"sqlite+aiosqlite:///{folder}/emp.db"
    queue, port = f"g{uuid.uuid4().hex[:12]}", free_port()
    if again is not None:
        queue, port = again.queue, int(again.address.rpartition(":")[2])
    environment = {k: v for k, v in os.environ.items() if not k.startswith("EMP_")}
    environment.update(
        EMP_REDIS_URL=redis_url,
        EMP_QUEUE=queue,
        EMP_DATABASE_URL=database_url,
        EMP_API_GRPC_PORT=str(port),
        EMP_WEBHOOK_RUN_DISPATCHER="false",
        EMP_LEASE_SECONDS=str(lease_seconds),
        EMP_REAP_INTERVAL_SECONDS="0.5",
        EMP_RETRY_BASE_SECONDS="0.01",
        EMP_RETRY_AVOID_GRACE_SECONDS="0",
        **env,
    )
    token = again.token if again is not None else _admin_token(environment)
    log = folder / f"api-{uuid.uuid4().hex[:6]}.log"
    args = [sys.executable, "-m", "uvicorn", "emp_api.app:create_app", "--factory", "--host",
            "127.0.0.1", "--port", str(free_port()), "--log-level", "warning"]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(args, env=environment, stdout=out, stderr=subprocess.STDOUT)
    try:
        address = f"127.0.0.1:{port}"
        with grpc.insecure_channel(address) as channel:
            try:
                grpc.channel_ready_future(channel).result(timeout=_START_WITHIN)
            except grpc.FutureTimeoutError:
                raise RuntimeError(
                    f"the API served no gRPC within {_START_WITHIN:g} s: {log.read_text()[-2000:]}"
                ) from None
        yield GrpcApi(address, queue, token, log)
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
