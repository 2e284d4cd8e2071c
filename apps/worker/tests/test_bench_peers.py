"""``make bench-peers`` still works: its harness drives EMP's worker CLI end to end on a tiny job
count (a private Redis, the driver in its own process, the table and the JSON). No figure is
judged: on a shared machine no timing is a fact."""

from __future__ import annotations

import json
from pathlib import Path

from bench.peers.__main__ import main
from bench.peers.table import ROWS, best_peer, cell


def test_the_harness_drains_emp_and_prints_the_table(tmp_path: Path) -> None:
    out = tmp_path / "peers.json"
    sizes = {"enqueue": 20, "bulk": 50, "drain": 60, "pickups": 3, "timeout_s": 60}
    code = main(["--only", "emp", "--sizes", json.dumps(sizes), "--no-compile", "--out", str(out)])
    (emp,) = json.loads(out.read_text())["results"]
    assert emp["errors"] == {}
    assert code == 0
    assert emp["system"] == "EMP"
    assert emp["drain_1"]["jobs"] == 60
    assert emp["drain_1"]["per_process"] == [60]
    assert sum(emp["drain_2"]["per_process"]) == 60  # each job once, whichever process ran it
    assert emp["pickup"]["samples"] == 3
    assert all(row.get(emp) is not None for row in ROWS)


def test_each_peer_is_shown_as_a_ratio_of_emp() -> None:
    assert cell(50.0, 100.0, "jobs/s") == "50 (0.50×)"
    assert cell(None, 100.0, "jobs/s") == "—"
    pickup_p50 = next(r for r in ROWS if r.label == "idle pickup p50")
    peers = [{"system": "A", "pickup": {"p50_ms": 3.0}}, {"system": "B", "pickup": {"p50_ms": 2.0}}]
    assert best_peer(pickup_p50, peers) == ("B", 2.0)  # lower is better for a latency
    bulk = next(r for r in ROWS if r.label == "bulk enqueue")
    assert best_peer(bulk, [{"system": "A", "enqueue_bulk": 9.0}, {"system": "B"}]) == ("A", 9.0)
