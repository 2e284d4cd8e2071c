"""A private ``redis-server`` process: for ``make dev`` and for tests that kill and restart Redis.

It runs the machine's binary (Debian's ``redis-server`` >= 7; PyPI has no Redis with Functions).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis


class RedisServerError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """``redis-server`` on 127.0.0.1:``port`` with its files under ``directory``."""

    def __init__(self, directory: Path, port: int | None = None, *, persist: bool = False) -> None:
        self.directory = Path(directory)
        self.port = port or free_port()
        self.persist = persist
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RedisServerError(
                "redis-server is not installed: `apt-get install -y redis-server` (Redis >= 7)"
            )
        self.directory.mkdir(parents=True, exist_ok=True)
        args = [
            binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.directory),
        ]
        args += ["--logfile", "redis.log", "--protected-mode", "no"]
        if self.persist:
            args += ["--appendonly", "yes", "--save", "60 1"]
        else:
            args += ["--appendonly", "no", "--save", ""]
        # Own process group: a Ctrl-C in `make dev` reaches our supervisor, which stops Redis last.
        self.process = subprocess.Popen(  # noqa: S603 - binary found on PATH, args built here
            args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    err = self.process.stderr.read().decode() if self.process.stderr else ""
                    log = self.directory / "redis.log"
                    raise RedisServerError(
                        f"redis-server exited with {self.process.returncode}: "
                        f"{err.strip() or (log.read_text()[-2000:] if log.exists() else '')}"
                    )
                with contextlib.suppress(redis.ConnectionError):
                    client.ping()
                    version = str(client.info("server")["redis_version"])
                    if int(version.split(".")[0]) < 7:
                        self.stop()
                        raise RedisServerError(f"redis-server {version} is too old: need >= 7")
                    return self
                time.sleep(0.02)
        finally:
            client.close()
        self.stop()
        raise RedisServerError(f"redis-server did not answer on port {self.port} in {timeout} s")

    def stop(self) -> None:
        """Stop gracefully (SIGTERM), then forcefully."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        """Die at once (SIGKILL), as a crashed server would."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
