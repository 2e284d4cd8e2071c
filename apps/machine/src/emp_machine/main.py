"""``emp-machine``: run a machine's workers until SIGTERM or Ctrl-C.

The spec comes from these flags, then ``EMP_*`` variables (``EMP_MACHINE_ID``, ``EMP_GPUS``,
``EMP_WORKERS=simulation:2``; see ``emp_machine.config``). As a container entrypoint,
``--env-file env.encrypted`` first verifies and decrypts that file in memory with the key in
``EMP_ENV_KEY`` and adds its variables to the environment of the machine and its workers (the
file's value wins where both set one). No plaintext is written anywhere, and the key itself is
not passed on to the workers. A file that fails any check stops the machine before anything
starts.

The first SIGTERM or Ctrl-C stops the workers gracefully (running jobs finish within the grace
period or go back to the queue); a second one makes them hand their jobs back at once.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any, NoReturn

from pydantic import ValidationError

from emp_core.errors import EmpError, invalid_from_validation
from emp_core.security.envcrypt import KEY_ENV, EnvCryptError, KeyRing, decrypt_env
from emp_core.telemetry import setup_telemetry
from emp_machine.config import MachineSettings
from emp_machine.machine import Machine

logger = logging.getLogger("emp_machine")


def load_env_file(path: Path) -> int:
    """Decrypt ``path`` with ``EMP_ENV_KEY`` into ``os.environ`` (in memory), then drop the key
    from the environment. Returns how many variables were set; raises before setting any."""
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise EnvCryptError(f"cannot read {path}: {exc.strerror or exc}") from None
    variables = decrypt_env(blob, KeyRing.from_env(), source=str(path))
    os.environ.update(variables)
    os.environ.pop(KEY_ENV, None)
    return len(variables)


def _parser() -> argparse.ArgumentParser:
    # argparse, not a CLI toolkit: the machine's image carries no typer/click/rich.
    p = argparse.ArgumentParser(
        prog="emp-machine",
        description="Start one worker per slot, keep them running, report the machine to Redis.",
    )
    add = p.add_argument
    add("--env-file", type=Path, help="Encrypted env file to decrypt (key: EMP_ENV_KEY) first.")
    add("--machine-id", help="Default: EMP_MACHINE_ID or host.")
    add("--gpus", type=int, help="GPUs to assign (default: EMP_GPUS, 0).")
    add("--workers", help="SERVICE:COUNT[,...] (default: EMP_WORKERS, simulation:1).")
    add("--redis-url", help="Default: EMP_REDIS_URL.")
    add("--queue", help="Queue name (default: EMP_QUEUE).")
    add("--log-level", help="DEBUG, INFO, WARNING...")
    return p


def run(argv: list[str] | None = None) -> None:
    """Start one worker per slot, keep them running, report the machine to Redis."""
    args = _parser().parse_args(argv)
    env_file = args.env_file
    loaded = 0
    if env_file is not None:
        try:
            loaded = load_env_file(env_file)
        except EnvCryptError as exc:
            _exit(f"refusing to start: {exc.message}", 2)
    flags: dict[str, Any] = {
        "machine_id": args.machine_id,
        "gpus": args.gpus,
        "workers": args.workers,
        "redis_url": args.redis_url,
        "queue": args.queue,
        "log_level": args.log_level,
    }
    try:
        settings = MachineSettings(**{k: v for k, v in flags.items() if v is not None})
        machine = Machine(settings)
    except ValidationError as exc:
        _exit(invalid_from_validation(exc).message, 2)
    except EmpError as exc:
        _exit(exc.message, 2)
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if env_file is not None:
        logger.info("machine %s loaded %d variables from %s", machine.id, loaded, env_file)
    telemetry = setup_telemetry(
        "emp-machine", instance_id=settings.machine_id, machine_id=settings.machine_id
    )
    try:
        code = asyncio.run(_serve(machine))
    finally:
        telemetry.shutdown()
    raise SystemExit(code)


async def _serve(machine: Machine) -> int:
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        logger.info("machine %s received %s", machine.id, sig.name)
        machine.stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    return await machine.run()


def _exit(message: str, code: int) -> NoReturn:
    print(f"emp-machine: {message}", file=sys.stderr)
    raise SystemExit(code)


def main() -> None:
    run()


if __name__ == "__main__":
    main()
