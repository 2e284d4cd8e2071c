"""``emp-machine --env-file``: the entrypoint of an image (ADR-001). The queue's address and a
secret exist only inside the encrypted file; the machine must reach that queue, its workers must
hold the secret, and no file anywhere under the test's directories may contain it."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from machine_helpers import (
    Machines,
    eventually,
    files_holding,
    machine_env,
    machines_in,
    proc_environ,
    wait_exit,
)

from emp_core.queue.queue import Queue
from emp_core.registry.machines import MachineState, get_machine, list_machines
from emp_core.registry.workers import WorkerRegistry
from emp_core.security.envcrypt import HEADER_BYTES, KEY_ENV, EnvKey, TruncatedFile, encrypt_env
from emp_core.settings import QueueSettings
from emp_machine.main import load_env_file

SECRET = "hf_machine-secret-2f9d41c8"


@pytest.fixture
def machines(tmp_path: Path) -> Iterator[Machines]:
    with machines_in(tmp_path / "logs") as started:
        yield started


def _image(tmp_path: Path, settings: QueueSettings, key: EnvKey) -> Path:
    """An "image" directory holding only the encrypted env, made without a plaintext file."""
    image = tmp_path / "image"
    image.mkdir()
    text = (
        f"EMP_REDIS_URL={settings.redis_url}\nEMP_QUEUE={settings.queue}\n"
        f"EMP_MACHINE_ID=m-enc\nEMP_WORKERS=simulation:1\nHF_TOKEN='{SECRET}'\n"
    )
    (image / "env.encrypted").write_bytes(encrypt_env(text, key))
    return image


async def test_the_machine_starts_from_an_encrypted_env_and_writes_no_plaintext(
    queue: Queue,
    redis: aioredis.Redis,
    settings: QueueSettings,
    machines: Machines,
    tmp_path: Path,
) -> None:
    key = EnvKey.generate("k1")
    image = _image(tmp_path, settings, key)
    tmp, home = tmp_path / "tmp", tmp_path / "home"
    tmp.mkdir()
    home.mkdir()
    # The host gives the key and nothing else: the queue's address is inside the file.
    env = machine_env(None, TMPDIR=str(tmp), HOME=str(home), **{KEY_ENV: key.encode()})
    assert files_holding(tmp_path, SECRET.encode()) == []

    machine = machines.start(env, "--env-file", "env.encrypted", cwd=image)

    async def worker_up() -> bool:
        return [w.worker_id for w in await WorkerRegistry(redis, queue.keys).live()] == [
            "m-enc-simulation-0"
        ]

    await eventually(worker_up, within=25)
    status = await get_machine(redis, queue.keys, "m-enc")
    assert status is not None
    assert status.state == MachineState.RUNNING
    (worker,) = status.workers
    assert worker.pid is not None
    child = proc_environ(worker.pid)
    assert child["HF_TOKEN"] == SECRET  # decrypted variables reach the workers
    assert KEY_ENV not in child  # the key does not

    machine.send_signal(signal.SIGTERM)
    assert await wait_exit(machine) == 0, machines.log()
    assert "loaded 5 variables from env.encrypted" in machines.log()
    # Nothing under the image, the temp dir, HOME or the logs holds the secret.
    assert files_holding(tmp_path, SECRET.encode()) == []
    assert sorted(p.name for p in image.iterdir()) == ["env.encrypted"]
    assert list(tmp.iterdir()) == []


@pytest.mark.parametrize(
    ("damage", "needle"),
    [
        ("tampered", "failed authentication"),
        ("wrong key", "is not the key"),
        ("no key", "EMP_ENV_KEY is not set"),
        ("placeholder key", "placeholder"),
        ("missing file", "cannot read"),
    ],
)
async def test_a_bad_env_file_or_key_starts_nothing(
    damage: str,
    needle: str,
    queue: Queue,
    redis: aioredis.Redis,
    settings: QueueSettings,
    machines: Machines,
    tmp_path: Path,
) -> None:
    key = EnvKey.generate("k1")
    image = _image(tmp_path, settings, key)
    env = machine_env(None, **{KEY_ENV: key.encode()})
    path = image / "env.encrypted"
    if damage == "tampered":
        blob = bytearray(path.read_bytes())
        blob[HEADER_BYTES + 20] ^= 0x01
        path.write_bytes(bytes(blob))
    elif damage == "wrong key":
        env[KEY_ENV] = EnvKey.generate("k1").encode()
    elif damage == "no key":
        del env[KEY_ENV]
    elif damage == "placeholder key":
        env[KEY_ENV] = "k1:change-me"
    else:
        path.unlink()

    machine = machines.start(env, "--env-file", "env.encrypted", cwd=image)
    assert await wait_exit(machine) == 2
    log = machines.log()
    assert "refusing to start" in log
    assert needle in log
    assert SECRET not in log
    assert await list_machines(redis, queue.keys) == []  # nothing started, nothing reported


def test_load_env_file_sets_the_variables_and_drops_the_key(
    settings: QueueSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("EMP_")}
    monkeypatch.setattr(os, "environ", environ)  # what it sets must not leak into other tests
    key = EnvKey.generate("k1")
    path = _image(tmp_path, settings, key) / "env.encrypted"
    environ.update({KEY_ENV: key.encode(), "HF_TOKEN": "from the host", "OTHER": "kept"})
    assert load_env_file(path) == 5
    assert environ["HF_TOKEN"] == SECRET  # the file wins: what was encrypted is what runs
    assert (environ["EMP_MACHINE_ID"], environ["OTHER"]) == ("m-enc", "kept")
    assert KEY_ENV not in environ

    before = dict(environ)
    environ[KEY_ENV] = key.encode()
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(TruncatedFile):
        load_env_file(path)
    assert environ == {**before, KEY_ENV: key.encode()}  # nothing applied, key untouched
