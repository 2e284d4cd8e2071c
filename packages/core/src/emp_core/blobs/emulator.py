"""A private Azurite blob service (the Azure Storage emulator): for tests and benchmarks, as
``emp_core.redis.server`` is for Redis.

Azurite comes from npm (``azurite@3.35``, the last for Node 20), installed into
``.tools/azurite`` by ``scripts/ensure-azurite.sh``; ``binary`` finds it there or on ``PATH``.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from emp_core.redis.server import free_port

# Azurite's well-known development account (public, documented by Microsoft; not a secret).
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


class AzuriteError(RuntimeError):
    pass


def binary(root: Path) -> str | None:
    local = root / ".tools" / "azurite" / "node_modules" / ".bin" / "azurite-blob"
    return str(local) if local.exists() else shutil.which("azurite-blob")


class Azurite:
    """``azurite-blob`` on 127.0.0.1:``port`` with its files under ``directory``."""

    def __init__(self, directory: Path, executable: str, port: int | None = None) -> None:
        self.directory = Path(directory)
        self.executable = executable
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{self.port}/{ACCOUNT};"
        )

    def start(self, timeout: float = 30.0) -> Azurite:
        self.directory.mkdir(parents=True, exist_ok=True)
        # --skipApiVersionCheck: azure-storage-blob 12.31 sends an API version 3.35 does not know.
        args = [
            self.executable, "--silent", "--location", str(self.directory),
            "--blobHost", "127.0.0.1", "--blobPort", str(self.port),
            "--skipApiVersionCheck", "--disableTelemetry", "--loose",
        ]  # fmt: skip
        self.process = subprocess.Popen(  # noqa: S603 - fixed arguments
            args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    err = self.process.stderr.read().decode() if self.process.stderr else ""
                    self.stop()
                    raise AzuriteError(
                        f"Azurite did not start on port {self.port}: {err}"
                    ) from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None
