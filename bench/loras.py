"""LoRA upload throughput (ADR-010): MB/s through ``POST /api/loras`` into the local store and
into Azure Blob Storage (Azurite), with the safetensors check and sha256 on the way.

    uv run python -m bench.loras [--mb 64] [--repeat 3]

Starts the real API (``emp_api.main``, one uvicorn process) on a private redis-server and a
SQLite file; uploads a generated LoRA of ``--mb`` MB streamed by httpx in 1 MiB pieces,
``--repeat`` times (each a different file), and prints MB/s per store and the API process's peak
resident memory before and after (a streamed upload must not grow it by the file's size).
Azurite runs from ``.tools/azurite`` (``scripts/ensure-azurite.sh``); without it that row is
skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from emp_core.blobs.emulator import Azurite
from emp_core.blobs.emulator import binary as azurite_binary
from emp_core.loras.safetensors import encode
from emp_core.redis.server import RedisServer, free_port
from emp_sql import DatabaseSettings, migrate
from emp_web.testing import create_account

ROOT = Path(__file__).resolve().parents[1]
BOUNDARY = "emp-bench-boundary"
PIECE = 1024 * 1024


def lora(mb: int) -> bytes:
    rank, width = 64, mb * 1024 * 1024 // (2 * 64 * 2 * 2)  # two F16 matrices of rank 64, x2 layers
    return encode(
        {
            f"lora_unet_{i}.lora_{d}.weight": (
                "F16",
                [rank, width] if d == "down" else [width, rank],
            )
            for i in range(2)
            for d in ("down", "up")
        },
        {"tag": uuid.uuid4().hex},
    )


async def body(data: bytes) -> AsyncIterator[bytes]:
    yield (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="b.safetensors"'
        "\r\nContent-Type: application/octet-stream\r\n\r\n"
    ).encode()
    for i in range(0, len(data), PIECE):
        yield data[i : i + PIECE]
    yield f"\r\n--{BOUNDARY}--\r\n".encode()


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def measure(
    env: dict[str, str], db_url: str, mb: int, repeat: int
) -> tuple[list[float], float, float]:
    """Start ``emp-api`` (uvicorn, one process) with ``env``; upload ``repeat`` files."""
    token = (await create_account(db_url, name="bench")).token
    port = free_port()
    args = [sys.executable, "-m", "emp_api.main", "--host", "127.0.0.1", "--port", str(port)]
    process = subprocess.Popen(args, env={**os.environ, **env})  # noqa: ASYNC220 - started once
    rates = []
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=600) as http:
            for _ in range(1200):  # up to two minutes on a loaded machine
                try:
                    if (await http.get("/health")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
            else:
                raise RuntimeError("emp-api did not answer /health")
            idle_rss = peak_rss_mb(process.pid)
            for _ in range(repeat):
                data = lora(mb)
                started = time.perf_counter()
                response = await http.post(
                    "/api/loras",
                    content=body(data),
                    headers={
                        "Authorization": f"Bearer {token}",
                        "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
                    },
                )
                elapsed = time.perf_counter() - started
                assert response.status_code == 201, response.text
                rates.append(len(data) / 1e6 / elapsed)
            busy_rss = peak_rss_mb(process.pid)
    finally:
        process.terminate()
        process.wait(30)
    return rates, idle_rss, busy_rss


async def run(mb: int, repeat: int) -> None:
    with tempfile.TemporaryDirectory(prefix="emp-bench-loras-") as tmp:
        root = Path(tmp)
        redis = RedisServer(root / "redis").start()
        db_url = f"sqlite+aiosqlite:///{root / 'emp.db'}"
        await migrate.upgrade(DatabaseSettings(database_url=db_url))
        rows: list[tuple[str, tuple[list[float], float, float] | None]] = []
        base = {
            "EMP_REDIS_URL": redis.url, "EMP_DATABASE_URL": db_url,
            "EMP_QUEUE": f"b{uuid.uuid4().hex[:8]}", "EMP_API_RUN_PROJECTOR": "false",
            "EMP_API_LOG_LEVEL": "warning",
        }  # fmt: skip
        try:
            local = {**base, "EMP_BLOB_URL": f"file://{root / 'blobs'}"}
            rows.append(("local folder", await measure(local, db_url, mb, repeat)))
            executable = azurite_binary(ROOT)
            if executable is None:
                rows.append(("Azurite (not installed)", None))
            else:
                azurite = Azurite(root / "azurite", executable).start()
                try:
                    azure = {
                        **base,
                        "EMP_BLOB_URL": "azure://bench",
                        "EMP_BLOB_AZURE_CONNECTION_STRING": azurite.connection_string,
                    }
                    rows.append(("Azure (Azurite)", await measure(azure, db_url, mb, repeat)))
                finally:
                    azurite.stop()
        finally:
            redis.stop()
    size = len(lora(mb)) / 1e6
    print(
        f"\nLoRA upload through POST /api/loras: {repeat} × {size:.1f} MB, streamed in 1 MiB pieces"
    )
    print(f"{'store':<26}{'median MB/s':>12}{'min':>8}{'max':>8}{'API peak RSS MB':>22}")
    for name, result in rows:
        if result is None:
            print(f"{name:<26}{'—':>12}")
            continue
        rates, idle, busy = result
        rss = f"{idle:.0f} idle → {busy:.0f}"
        median = statistics.median(rates)
        print(f"{name:<26}{median:>12.1f}{min(rates):>8.1f}{max(rates):>8.1f}{rss:>22}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(run(args.mb, args.repeat))


if __name__ == "__main__":
    main()
