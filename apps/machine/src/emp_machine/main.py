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

import asyncio
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from pydantic import ValidationError

from emp_core.envcrypt import KEY_ENV, EnvCryptError, KeyRing, decrypt_env
from emp_core.errors import EmpError, invalid_from_validation
from emp_core.telemetry import setup_telemetry
from emp_machine.config import MachineSettings
from emp_machine.machine import Machine

logger = logging.getLogger("emp_machine")

app = typer.Typer(add_completion=False, no_args_is_help=False)


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


@app.command()
def run(
    env_file: Annotated[
        Path | None,
        typer.Option(help="Encrypted env file to decrypt (key: EMP_ENV_KEY) before starting."),
    ] = None,
    machine_id: Annotated[str | None, typer.Option(help="Default: EMP_MACHINE_ID or host.")] = None,
    gpus: Annotated[int | None, typer.Option(help="GPUs to assign (default: EMP_GPUS, 0).")] = None,
    workers: Annotated[
        str | None, typer.Option(help="SERVICE:COUNT[,...] (default: EMP_WORKERS, simulation:1).")
    ] = None,
    redis_url: Annotated[str | None, typer.Option(help="Default: EMP_REDIS_URL.")] = None,
    queue: Annotated[str | None, typer.Option(help="Queue name (default: EMP_QUEUE).")] = None,
    log_level: Annotated[str | None, typer.Option(help="DEBUG, INFO, WARNING...")] = None,
) -> None:
    """Start one worker per slot, keep them running, report the machine to Redis."""
    loaded = 0
    if env_file is not None:
        try:
            loaded = load_env_file(env_file)
        except EnvCryptError as exc:
            _exit(f"refusing to start: {exc.message}", 2)
    flags: dict[str, Any] = {
        "machine_id": machine_id,
        "gpus": gpus,
        "workers": workers,
        "redis_url": redis_url,
        "queue": queue,
        "log_level": log_level,
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
    raise typer.Exit(code)


async def _serve(machine: Machine) -> int:
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        logger.info("machine %s received %s", machine.id, sig.name)
        machine.stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    return await machine.run()


def _exit(message: str, code: int) -> NoReturn:
    typer.echo(f"emp-machine: {message}", err=True)
    raise typer.Exit(code)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
