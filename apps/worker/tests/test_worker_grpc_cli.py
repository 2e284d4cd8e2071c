"""``emp-worker --transport grpc`` says what is wrong and exits non-zero, with no traceback, when
its address or token is missing or the server cannot be reached; and a worker on the Redis
transport never imports grpcio (it is the ``grpc`` extra's)."""

from __future__ import annotations

import subprocess
import sys

from worker_helpers import worker_command, worker_env

from emp_core.redis.server import free_port
from emp_core.settings import QueueSettings


def _worker(settings: QueueSettings, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        worker_command("--burst", *args),
        env=worker_env(settings, **env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_grpc_without_an_address_says_so(settings: QueueSettings) -> None:
    done = _worker(settings, "--transport", "grpc", EMP_API_TOKEN="t")
    assert done.returncode == 2
    assert "--transport grpc needs the API's gRPC address: --api HOST:PORT" in done.stderr
    assert "Traceback" not in done.stderr


def test_grpc_without_a_token_says_so(settings: QueueSettings) -> None:
    done = _worker(settings, "--transport", "grpc", "--api", "127.0.0.1:1")
    assert done.returncode == 2
    assert "needs an admin API token in EMP_API_TOKEN" in done.stderr
    assert "Traceback" not in done.stderr


def test_an_unreachable_server_says_so(settings: QueueSettings) -> None:
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    done = _worker(
        settings, "--transport", "grpc", "--api", address,
        EMP_API_TOKEN="t", EMP_API_CONNECT_TIMEOUT_SECONDS="1",
    )  # fmt: skip
    assert done.returncode == 1
    assert f"cannot reach the API's gRPC server at {address}" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_redis_worker_does_not_import_grpc() -> None:
    probe = (
        "import sys, emp_worker.main, emp_worker.worker, emp_worker.transport.redis; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('grpc', 'emp_rpc', 'emp')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]"
