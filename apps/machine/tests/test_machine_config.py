"""The machine's spec: parsing EMP_WORKERS, planning slots and GPUs, each worker's environment."""

from __future__ import annotations

import sys

import pytest

from emp_core.errors import InvalidInput
from emp_machine.config import MachineSettings, Slot, parse_workers, plan_slots
from emp_machine.machine import Machine
from emp_machine.supervisor import RestartPolicy


def test_parse_workers() -> None:
    assert parse_workers("simulation:2") == [("simulation", 2)]
    assert parse_workers(" simulation:2 , comfyui ") == [("simulation", 2), ("comfyui", 1)]
    for bad, needle in [
        ("", "names no worker"),
        ("simulation:0", "positive integer"),
        ("simulation:two", "positive integer"),
        ("Simulation:1", "not a service name"),
        ("simulation:1,simulation:2", "twice"),
        ("simulation:65", "at most 64"),
    ]:
        with pytest.raises(InvalidInput, match=needle):
            parse_workers(bad)


def test_plan_slots_ids_and_gpus() -> None:
    slots = plan_slots("m1", [("comfyui", 2), ("simulation", 1)], gpus=2)
    assert slots == [
        Slot("m1-comfyui-0", "comfyui", 0, 0),
        Slot("m1-comfyui-1", "comfyui", 1, 1),
        Slot("m1-simulation-0", "simulation", 0, 0),  # more slots than GPUs: round robin
    ]
    assert [s.gpu for s in plan_slots("m1", [("simulation", 2)], gpus=0)] == [None, None]


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMP_MACHINE_ID", "salad-7f3a")
    monkeypatch.setenv("EMP_GPUS", "2")
    monkeypatch.setenv("EMP_WORKERS", "simulation:2")
    monkeypatch.setenv("EMP_WORKER_COMMAND", "emp-worker --log-level DEBUG")
    s = MachineSettings()
    assert s.workers == [("simulation", 2)]
    assert s.worker_command == ["emp-worker", "--log-level", "DEBUG"]
    assert [slot.worker_id for slot in s.slots()] == ["salad-7f3a-simulation-0",
                                                      "salad-7f3a-simulation-1"]  # fmt: skip
    monkeypatch.delenv("EMP_WORKER_COMMAND")
    assert MachineSettings().worker_command == [sys.executable, "-m", "emp_worker.main"]


def test_each_worker_gets_its_identity_and_gpu_but_never_the_env_key() -> None:
    settings = MachineSettings(
        machine_id="m1", gpus=2, workers=[("simulation", 2)], redis_url="redis://h:1/0",
        queue="q1", grace_seconds=7,
    )  # fmt: skip
    base = {"PATH": "/bin", "EMP_ENV_KEY": "k1:secret", "HF_TOKEN": "t", "EMP_QUEUE": "other"}
    machine = Machine(settings, base_env=base)
    envs = [machine.worker_env(slot) for slot in settings.slots()]
    assert [e["EMP_WORKER_ID"] for e in envs] == ["m1-simulation-0", "m1-simulation-1"]
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["0", "1"]
    for env in envs:
        assert "EMP_ENV_KEY" not in env
        assert env["HF_TOKEN"] == "t"
        assert (env["EMP_MACHINE_ID"], env["EMP_SERVICES"]) == ("m1", "simulation")
        assert (env["EMP_REDIS_URL"], env["EMP_QUEUE"]) == ("redis://h:1/0", "q1")
        assert env["EMP_GRACE_SECONDS"] == "7.0"


def test_restart_policy_backs_off_exponentially_up_to_the_limit() -> None:
    policy = RestartPolicy(base_s=1, cap_s=5, max_restarts=5)
    assert [policy.delay(n) for n in range(1, 7)] == [1, 2, 4, 5, 5, None]
    assert RestartPolicy(max_restarts=0).delay(1) is None
