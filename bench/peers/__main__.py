"""``make bench-peers`` (``uv run python -m bench.peers``): EMP beside SAQ, arq, RQ, Celery and
Dramatiq on one private ``redis-server``, in one run, with the same workloads (``harness.py``).

Each system is driven by ``bench.peers.drive`` in a process of its own, run by the interpreter of
its environment: the workspace's for EMP, ``.data/bench-peers-venv`` (and, for arq, whose
redis-py cap conflicts with Celery's, ``.data/bench-peers-arq-venv``) for the peers, which the
Makefile installs from ``requirements*.txt``. The systems run one after another, never at once.
Prints one table, each peer's figure with its ratio to EMP's, and writes
``bench/results/peers.json``. A benchmark, not a test: nothing here fails on a slow figure.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from rich.console import Console

from bench.peers.harness import ROOT, Sizes
from bench.peers.table import render
from emp_core.redis.server import RedisServer

SYSTEMS = ("emp", "saq", "arq", "rq", "celery", "dramatiq")
PEERS_VENV = ROOT / ".data" / "bench-peers-venv"
ARQ_VENV = ROOT / ".data" / "bench-peers-arq-venv"
RESULTS = ROOT / "bench" / "results" / "peers.json"
QUICK = Sizes(enqueue=1_000, bulk=2_000, drain=1_000, pickups=50)


def python_of(system: str) -> Path:
    if system == "emp":
        return Path(sys.executable)
    return (ARQ_VENV if system == "arq" else PEERS_VENV) / "bin" / "python"


def compile_workspace() -> None:
    """Byte-compile the workspace's environment and sources, as a deployed image is
    (``uv sync --compile-bytecode``); the peers' environments are installed compiled. Where
    ``PYTHONDONTWRITEBYTECODE`` is set (it is on these machines), a process would otherwise
    compile every module it imports, every time: about 1 s of a worker's start-up here."""
    dirs = [Path(sysconfig.get_paths()["purelib"])]
    dirs += [p for d in ("apps", "packages") for p in (ROOT / d).glob("*/src")]
    for d in [*dirs, ROOT / "bench"]:
        compileall.compile_dir(d, quiet=2, workers=0)


def drive(system: str, url: str, directory: Path, sizes: Sizes) -> dict[str, Any]:
    """Run every workload against one system in its own interpreter; its JSON result."""
    python = python_of(system)
    if not python.exists():
        return {"system": system, "errors": {"setup": f"{python} is missing: run make bench-peers"}}
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BENCH_REDIS_URL": url}
    args = [str(python), "-m", "bench.peers.drive", system, url, str(directory),
            "--sizes", json.dumps(asdict(sizes))]  # fmt: skip
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        return {"system": system, "errors": {"driver": done.stderr[-2000:]}}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.peers", description=__doc__)
    p.add_argument("--only", help=f"comma-separated systems (default: {','.join(SYSTEMS)})")
    p.add_argument("--quick", action="store_true", help="smaller workloads, for a smoke run")
    p.add_argument("--sizes", default="{}", help='JSON overriding sizes, e.g. {"drain": 200}')
    p.add_argument("--no-compile", action="store_true", help="skip byte-compiling the workspace")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    systems = args.only.split(",") if args.only else list(SYSTEMS)
    unknown = sorted(set(systems) - set(SYSTEMS))
    if unknown:
        p.error(f"unknown system {', '.join(unknown)}: choose from {', '.join(SYSTEMS)}")
    sizes = replace(QUICK if args.quick else Sizes(), **json.loads(args.sizes))
    console = Console(width=None if sys.stdout.isatty() else 170)  # a log keeps every column
    if not args.no_compile:
        with console.status("byte-compiling the workspace (once)"):
            compile_workspace()
    env: dict[str, Any] = {"cores": os.cpu_count(), "load_before": _load(), "sizes": asdict(sizes),
                           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}  # fmt: skip
    results = []
    with (
        tempfile.TemporaryDirectory(prefix="emp-bench-peers-") as tmp,
        RedisServer(Path(tmp) / "redis") as server,
    ):
        for system in systems:
            directory = Path(tmp) / system
            directory.mkdir()
            with console.status(f"{system}: enqueue, drain with 1 and 2 workers, pickup"):
                results.append(drive(system, server.url, directory, sizes))
    env["load_after"] = _load()
    render(results, env, console)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": env, "results": results}, indent=2) + "\n")
    console.print(f"raw figures: {args.out}")
    return 1 if any(r.get("errors") for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
