"""`make bench` and `make bench-grpc` still run end to end, as a user runs them (their quick
sizes, each in a process of its own with its own private Redis and API process), and their
figures mean what they say. Both broke silently during issue 10's and issue 13's changes (an
idle worker nothing woke; a gRPC worker given a --queue it now refuses), and the HTTP submit
figure counted 429 answers as submits. No figure's speed is judged here: on a shared machine no
timing is a fact."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=300,
        check=False,
    )  # fmt: skip


def test_make_bench_quick_prints_every_figure_and_counts_only_accepted_submits(
    tmp_path: Path,
) -> None:
    out = tmp_path / "bench.json"
    done = run("bench", "--quick", "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "HTTP submit, one API process" in done.stdout
    result = json.loads(out.read_text())
    figures = {f["key"]: f["value"] for f in result["figures"]}
    assert all(value is not None for value in figures.values()), figures
    assert figures["wake_workers_per_submit"] == 1  # one submit wakes one idle slot
    # The HTTP rate is of accepted submits: the bench's API runs without the per-user limit,
    # and an answer other than 201 would be shown, not counted.
    assert set(result["raw"]["api"]["submit"]["statuses"]) == {"201"}


def test_make_bench_grpc_quick_drains_over_both_transports() -> None:
    done = run("bench.rpc", "--quick")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "worker jobs/s, 1 slot" in done.stdout
    assert "worker jobs/s, 4 slots" in done.stdout
