"""A private ``redis-server`` process: for ``make dev`` and for tests that kill and restart Redis.

It runs the machine's binary (Debian's ``redis-server`` >= 7; PyPI has no Redis with Functions).
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import redis


class RedisServerError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_cluster_port() -> int:
    """A free port P below the kernel's ephemeral range with P + 10000 free too: Redis 7.0 puts
    a cluster node's bus on P + 10000 and refuses P above 55535."""
    for _ in range(200):
        port = random.randint(20000, 29999)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        return port
    raise RedisServerError("no free port pair for a cluster node in 20000-39999")


class RedisServer:
    """``redis-server`` on 127.0.0.1:``port`` with its files under ``directory``."""

    def __init__(
        self,
        directory: Path,
        port: int | None = None,
        *,
        persist: bool = False,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.directory = Path(directory)
        self.port = port or free_port()
        self.persist = persist
        self.extra_args = list(extra_args)
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
        args += self.extra_args
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


class LocalCluster:
    """A Redis Cluster on 127.0.0.1: ``primaries`` primaries, each with ``replicas`` replicas, on
    free ports, for the tests, ``make dev`` variants and ``make bench-cluster``. Starts in about a
    second; ``url`` is the ``redis+cluster://`` URL ``emp_core.redis.connect`` understands."""

    def __init__(self, directory: Path, *, primaries: int = 3, replicas: int = 0) -> None:
        self.directory = Path(directory)
        self.primaries = primaries
        self.replicas = replicas
        self.nodes = [
            RedisServer(
                self.directory / f"node{i}",
                free_cluster_port(),
                extra_args=[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    # Fail a silent primary over quickly: the failover test waits on it.
                    "--cluster-node-timeout",
                    "1000",
                    "--cluster-replica-validity-factor",
                    "0",
                ],
            )
            for i in range(primaries * (1 + replicas))
        ]

    @property
    def url(self) -> str:
        seeds = ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)
        return f"redis+cluster://{seeds}"

    def start(self, timeout: float = 20.0) -> LocalCluster:
        cli = shutil.which("redis-cli")
        if cli is None:
            raise RedisServerError("redis-cli is not installed (it comes with redis-server)")
        for node in self.nodes:
            node.start()
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        created = subprocess.run(  # noqa: S603 - binary found on PATH, args built here
            [cli, "--cluster", "create", *addresses, "--cluster-replicas", str(self.replicas),
             "--cluster-yes"],
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
        if created.returncode != 0:
            self.stop()
            raise RedisServerError(f"redis-cli --cluster create failed: {created.stdout[-2000:]}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # Ready when every node sees the cluster ok and every replica has finished its first
            # sync: a write acknowledged before that is not on the replica yet.
            if all(self._state(node) == "ok" and self._synced(node) for node in self.nodes):
                return self
            time.sleep(0.05)
        self.stop()
        raise RedisServerError(f"the cluster did not reach state ok within {timeout} s")

    @staticmethod
    def _state(node: RedisServer) -> str:
        client = redis.Redis(port=node.port, socket_connect_timeout=0.5, decode_responses=True)
        try:
            return str(client.cluster("info").get("cluster_state", ""))
        except redis.RedisError:
            return ""
        finally:
            client.close()

    @staticmethod
    def _synced(node: RedisServer) -> bool:
        client = redis.Redis(port=node.port, socket_connect_timeout=0.5, decode_responses=True)
        try:
            info = client.info("replication")
            return info.get("role") == "master" or info.get("master_link_status") == "up"
        except redis.RedisError:
            return False
        finally:
            client.close()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
