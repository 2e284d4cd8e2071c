"""Worker settings: flags over environment over a config file; capabilities built from them."""

from __future__ import annotations

import json
import os
import socket

import pytest

from emp_core.errors import InvalidInput
from emp_worker.config import WorkerSettings, default_worker_id


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for name in list(os.environ):
        if name.startswith("EMP_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no stray .env file


def test_defaults():
    s = WorkerSettings()
    assert s.services == ["simulation"]
    assert (s.slots, s.grace_seconds, s.burst) == (1, 30.0, False)
    assert s.worker_id == default_worker_id()
    assert s.worker_id.endswith(f"-{os.getpid()}")
    assert s.registry_ttl_seconds == 3 * s.registry_refresh_seconds


def test_default_worker_id_is_hostname_and_pid(monkeypatch):
    monkeypatch.setattr(socket, "gethostname", lambda: "gpu box#1")
    assert default_worker_id() == f"gpu-box-1-{os.getpid()}"


def test_environment(monkeypatch):
    monkeypatch.setenv("EMP_SERVICES", "simulation, comfyui")
    monkeypatch.setenv("EMP_SLOTS", "2")
    monkeypatch.setenv("EMP_WORKER_ID", "m1-gpu0")
    monkeypatch.setenv("EMP_GPU_MEMORY_GB", "24")
    monkeypatch.setenv("EMP_MODELS", '{"comfyui": ["sdxl"]}')
    monkeypatch.setenv("EMP_DENIED_CUSTOMERS", "acme,globex")
    monkeypatch.setenv("EMP_CAPABILITIES", '{"gpu.vendor": "nvidia"}')
    monkeypatch.setenv("EMP_QUEUE", "q1")

    s = WorkerSettings()

    assert s.services == ["simulation", "comfyui"]
    assert (s.slots, s.worker_id, s.queue) == (2, "m1-gpu0", "q1")
    caps = s.to_capabilities()
    assert caps.worker_id == "m1-gpu0"
    assert caps.hardware.gpu_memory_gb == 24
    assert caps.models == {"comfyui": ["sdxl"]}
    assert caps.denied_customers == ["acme", "globex"]
    assert caps.capabilities == {"gpu": {"vendor": "nvidia"}}


def test_toml_file(tmp_path):
    path = tmp_path / "worker.toml"
    path.write_text(
        'services = ["simulation"]\nslots = 3\nmachine_id = "m1"\nram_gb = 64\n'
        '[models]\nsimulation = ["sd15"]\n[capabilities]\n"cuda" = 12.4\n'
    )
    s = WorkerSettings(config_file=path)
    assert (s.slots, s.machine_id, s.ram_gb) == (3, "m1", 64)
    caps = s.to_capabilities()
    assert caps.models == {"simulation": ["sd15"]}
    assert caps.capabilities == {"cuda": 12.4}


def test_json_file_named_by_the_environment(tmp_path, monkeypatch):
    path = tmp_path / "worker.json"
    path.write_text(json.dumps({"slots": 4, "customer_isolation": "strict"}))
    monkeypatch.setenv("EMP_CONFIG_FILE", str(path))
    s = WorkerSettings()
    assert (s.slots, s.customer_isolation) == (4, "strict")


def test_flags_beat_environment_beat_file(tmp_path, monkeypatch):
    path = tmp_path / "worker.toml"
    path.write_text("slots = 3\ngrace_seconds = 7\nmachine_id = 'from-file'\n")
    monkeypatch.setenv("EMP_SLOTS", "2")
    monkeypatch.setenv("EMP_GRACE_SECONDS", "8")
    s = WorkerSettings(config_file=path, slots=1)
    assert s.slots == 1  # flag
    assert s.grace_seconds == 8  # environment over file
    assert s.machine_id == "from-file"  # file over default


def test_unknown_key_in_the_file_is_refused(tmp_path):
    path = tmp_path / "worker.toml"
    path.write_text("slotz = 2\n")
    with pytest.raises(InvalidInput, match="unknown setting slotz") as info:
        WorkerSettings(config_file=path)
    assert info.value.field == "slotz"


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("w.yaml", "slots: 2", "must end in .toml or .json"),
        ("w.toml", "slots = ", "does not parse"),
        ("w.json", "[1, 2]", "must hold a table"),
    ],
)
def test_bad_files_are_refused(tmp_path, name, content, problem):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(InvalidInput, match=problem):
        WorkerSettings(config_file=path)


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(InvalidInput, match="cannot be read"):
        WorkerSettings(config_file=tmp_path / "nope.toml")
