"""Every command example in README.md after "Two commands", run as written against `make dev`.

The stack is ``scripts/dev.py`` itself (what ``make dev`` runs), on free ports and a data folder of
its own (``EMP_DEV_*``), so it never meets a developer's own ``make dev``. What is rewritten in
the examples, and only that:

- the port numbers of ``make dev`` (6390, 8000, 8001) become the test stack's;
- placeholders take the values earlier commands printed: ``JOB_ID`` (the last job submitted),
  ``TOKEN_ID`` (from ``emp tokens list``), ``emp_…`` (the token ``make dev`` printed), ``k1:…``
  (the key ``emp env keygen`` printed).

A Python example that submits a job runs; one that is a fragment of the reader's own program
(the webhook receiver, the gRPC client) is compiled. A block marked
``<!-- readme-test: skip: REASON -->`` (it needs a GPU model, a tool or a file of the reader's)
is left out.

Commands run in a scratch folder (``UV_PROJECT`` points ``uv`` at this repository) with
``EMP_DATABASE_URL`` naming the stack's database, which is where the README's default
``.data/emp.db`` points when run from the repository's root. ``emp-worker`` and ``emp-machine``
run until they have registered in Redis, then get SIGTERM, which must end them cleanly.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from emp_core.queue.keys import Keys
from emp_core.redis.server import free_port

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PASSWORD = "readme-example-password-1"
# Generous bounds for a loaded 2-core machine; none is asserted, they only stop a hang.
START_TIMEOUT = 180.0
COMMAND_TIMEOUT = 120.0
_HEX_ID = re.compile(r"\b[0-9a-f]{32}\b")


@dataclass
class DevStack:
    redis_url: str
    ports: dict[str, int]  # make dev's default port -> this stack's
    database_url: str
    token: str
    process: subprocess.Popen[str]
    log: Path


@dataclass
class Session:
    """What the examples have printed so far, for the placeholders of the next ones."""

    stack: DevStack
    cwd: Path
    env: dict[str, str]
    values: dict[str, str] = field(default_factory=dict)

    def fill(self, command: str) -> str:
        ports = self.stack.ports
        command = re.sub(r"\b(6390|8000|8001)\b", lambda m: str(ports[int(m[1])]), command)
        for placeholder, value in self.values.items():
            command = command.replace(placeholder, value)
        return command


def examples() -> list[tuple[str, str]]:
    """(language, text) of each example after the "Two commands" block. A block right after
    ``<!-- readme-test: skip: REASON -->`` needs what a dev machine lacks (a GPU model, a tool,
    a file of the reader's) and is left out; the reason must be given."""
    text = README.read_text()
    text = text[text.index("## Two commands") :]
    found = re.findall(
        r"(<!-- readme-test: skip:([^>]*)-->\n)?```(bash|python)\n(.*?)```", text, re.S
    )
    assert found[0][3].startswith("make dev"), "the first example is the two commands"
    assert all(reason.strip() for marker, reason, _, _ in found if marker), "give a reason"
    return [(language, body) for marker, _, language, body in found[1:] if not marker]


def commands(block: str) -> Iterator[str]:
    """The block's commands: continuation lines joined, ``a ; b`` split, comments dropped."""
    for line in block.replace("\\\n", " ").splitlines():
        line = re.sub(r"\s+#\s.*$", "", line).strip()
        if line and not line.startswith("#"):
            yield from (part.strip() for part in line.split(" ; "))


@pytest.fixture(scope="module")
def dev_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    data = tmp_path_factory.mktemp("dev-data")
    ports = {6390: free_port(), 8000: free_port(), 8001: free_port()}
    log = data / "dev.log"
    env = {
        **os.environ,
        "EMP_DEV_DATA": str(data),
        "EMP_DEV_REDIS_PORT": str(ports[6390]),
        "EMP_DEV_API_PORT": str(ports[8000]),
        "EMP_DEV_STUDIO_PORT": str(ports[8001]),
    }
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, str(ROOT / "scripts" / "dev.py")], env=env, cwd=ROOT, text=True,
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while "Ctrl-C stops everything." not in log.read_text():
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"no banner:\n{log.read_text()}"
            time.sleep(0.2)
        banner = log.read_text()
        token = re.search(r"\(shown once\): (emp_\S+)", banner)
        assert token, banner
        yield DevStack(
            redis_url=f"redis://127.0.0.1:{ports[6390]}/0",
            ports=ports,
            database_url=f"sqlite+aiosqlite:///{data / 'emp.db'}",
            token=token[1],
            process=process,
            log=log,
        )
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_banner_is_whole_and_first(dev_stack: DevStack) -> None:
    """Printed to a file, nothing is wrapped; the banner comes before any demo job ends."""
    text = dev_stack.log.read_text()
    banner = text[: text.index("Ctrl-C stops everything.")]
    assert re.search(r"sign in as admin@example.com / \S{40,}\n", banner)
    assert re.search(r"\n  EMP_REDIS_URL=\S+ uv run emp submit .* --wait\n", banner)
    assert "completed on" not in banner


def _registered(stack: DevStack, key: str, before: int, process: subprocess.Popen[str]) -> None:
    client = redis.Redis.from_url(stack.redis_url)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while int(client.zcard(key)) <= before:
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "it never registered"
            time.sleep(0.2)
    finally:
        client.close()


def _long_running(session: Session, command: str) -> None:
    """Start it, wait until it shows up in Redis, SIGTERM it: it must stop cleanly."""
    keys = Keys()
    key = keys.machines() if "emp-machine" in command else keys.workers()
    client = redis.Redis.from_url(session.stack.redis_url)
    before = int(client.zcard(key))
    client.close()
    process = subprocess.Popen(
        ["bash", "-c", f"exec env {command}"], cwd=session.cwd, env=session.env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        _registered(session.stack, key, before, process)
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=COMMAND_TIMEOUT)
    assert process.returncode == 0, f"{command}\n{out}\n{err}"
    assert "Traceback" not in err, err


def _run(session: Session, command: str) -> str:
    print(f"$ {command}", flush=True)  # shown when the test fails
    if re.fullmatch(r"(export )?[A-Z_]+=\S+", command):  # a variable for the next commands
        name, value = command.removeprefix("export ").split("=", 1)
        session.env[name] = value
        return ""
    if re.search(r"\bemp-(worker|machine)\b(?!.*--help)", command):
        _long_running(session, command)
        return ""
    result = subprocess.run(
        ["bash", "-c", command], cwd=session.cwd, env=session.env, text=True,
        input=f"{PASSWORD}\n{PASSWORD}\n", capture_output=True, timeout=COMMAND_TIMEOUT,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    return result.stdout


def _learn(session: Session, command: str, stdout: str) -> None:
    """Remember what the next examples' placeholders stand for."""
    if " emp submit " in f" {command} " and (ids := _HEX_ID.findall(stdout)):
        session.values["JOB_ID"] = ids[-1]
    if "emp tokens list" in command:
        session.values["TOKEN_ID"] = next(
            m[0] for line in stdout.splitlines() if "laptop" in line and (m := _HEX_ID.search(line))
        )
    if "emp env keygen" in command:
        session.values["k1:…"] = stdout.strip()


def _python(session: Session, code: str) -> None:
    """A Python example that submits a job runs, its top-level ``await`` inside ``asyncio.run``;
    any other (a webhook receiver, say: a fragment of someone's server) must at least compile."""
    if "await queue." not in code:
        compile(code, "README.md", "exec")
        return
    program = "import asyncio\n\nasync def main():\n" + textwrap.indent(code, "    ")
    program += "\n    print(job_id)\n\nasyncio.run(main())\n"
    result = subprocess.run(
        ["uv", "run", "python", "-c", session.fill(program)], cwd=session.cwd, env=session.env,
        text=True, capture_output=True, timeout=COMMAND_TIMEOUT, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert _HEX_ID.search(result.stdout), result.stdout


# About 30 commands, each a `uv run` that imports the project: minutes on a loaded 2-core box.
@pytest.mark.timeout(900)
def test_every_readme_example_runs_as_written(dev_stack: DevStack, tmp_path: Path) -> None:
    # The README says to type `.tools/venv/bin/uv` where uv is not on PATH: the test does the same
    # by putting the uv that make found first on PATH.
    found_uv = subprocess.run(
        ["bash", str(ROOT / "scripts" / "find-uv.sh")], capture_output=True, text=True, check=True
    ).stdout.strip()
    env = {
        **os.environ,
        "PATH": f"{Path(found_uv).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "UV_PROJECT": str(ROOT),
        "UV_FROZEN": "1",
        "EMP_DATABASE_URL": dev_stack.database_url,
        "COLUMNS": "80",
    }
    for name in ("EMP_REDIS_URL", "EMP_QUEUE", "EMP_ENV_KEY", "VIRTUAL_ENV"):
        env.pop(name, None)  # only what the examples set
    session = Session(dev_stack, tmp_path, env, {"emp_…": dev_stack.token})
    ran = 0
    for language, block in examples():
        if language == "python":
            _python(session, block)
            ran += 1
            continue
        for command in commands(block):
            command = session.fill(command)
            _learn(session, command, _run(session, command))
            ran += 1
    assert ran >= 20, f"only {ran} examples found: did the README's layout change?"
