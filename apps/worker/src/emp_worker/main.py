"""``emp-worker``: run one worker process until SIGTERM or Ctrl-C (``--burst``: until drained).

Settings come from these flags, then ``EMP_*`` environment variables, then a config file
(``--config worker.toml``); see ``emp_worker.config``. The first SIGTERM or Ctrl-C stops claiming
and gives running jobs ``--grace`` seconds; a second one hands them back to the queue at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from pydantic import ValidationError
from redis.exceptions import RedisError

from emp_core.errors import EmpError, InvalidInput, invalid_from_validation
from emp_core.telemetry import setup_telemetry
from emp_worker.config import WorkerSettings
from emp_worker.worker import Worker

logger = logging.getLogger("emp_worker")

app = typer.Typer(add_completion=False, no_args_is_help=False)


def _models(values: list[str]) -> dict[str, list[str]]:
    """``["simulation:sd15,sdxl"]`` -> ``{"simulation": ["sd15", "sdxl"]}``."""
    out: dict[str, list[str]] = {}
    for value in values:
        service, sep, names = value.partition(":")
        if not sep or not service or not names:
            raise InvalidInput(
                f"--model {value!r} must read SERVICE:MODEL[,MODEL...]", field="models"
            )
        out.setdefault(service, []).extend(n.strip() for n in names.split(",") if n.strip())
    return out


def _capabilities(values: list[str]) -> dict[str, Any]:
    """``["gpu.vendor=nvidia", "cuda=12.4"]`` -> a dict; a value that parses as JSON is JSON."""
    out: dict[str, Any] = {}
    for value in values:
        path, sep, raw = value.partition("=")
        if not sep or not path:
            raise InvalidInput(f"--capability {value!r} must read PATH=VALUE", field="capabilities")
        try:
            out[path] = json.loads(raw)
        except json.JSONDecodeError:
            out[path] = raw
    return out


@app.command()
def run(
    service: Annotated[
        list[str] | None, typer.Option("--service", "-s", help="Service to run (repeat, or a,b).")
    ] = None,
    worker_id: Annotated[str | None, typer.Option(help="Default: {hostname}-{pid}.")] = None,
    machine_id: Annotated[str | None, typer.Option(help="The machine this worker runs on.")] = None,
    slots: Annotated[int | None, typer.Option(help="Jobs run at once (default 1).")] = None,
    grace: Annotated[
        float | None, typer.Option(help="Seconds running jobs get after SIGTERM (default 30).")
    ] = None,
    burst: Annotated[
        bool | None, typer.Option("--burst/--no-burst", help="Exit once nothing is left.")
    ] = None,
    config: Annotated[Path | None, typer.Option(help="A .toml or .json settings file.")] = None,
    redis_url: Annotated[str | None, typer.Option(help="Default: EMP_REDIS_URL.")] = None,
    queue: Annotated[str | None, typer.Option(help="Queue name (default: default).")] = None,
    gpu_memory_gb: Annotated[float | None, typer.Option()] = None,
    cpu_cores: Annotated[int | None, typer.Option()] = None,
    ram_gb: Annotated[float | None, typer.Option()] = None,
    model: Annotated[
        list[str] | None, typer.Option(help="SERVICE:MODEL[,MODEL...] held (repeat).")
    ] = None,
    capability: Annotated[
        list[str] | None, typer.Option(help="PATH=VALUE custom capability (repeat).")
    ] = None,
    customer_isolation: Annotated[str | None, typer.Option(help="none, loose or strict.")] = None,
    allow_customer: Annotated[list[str] | None, typer.Option(help="Only these customers.")] = None,
    deny_customer: Annotated[list[str] | None, typer.Option(help="Never these customers.")] = None,
    workflow_id: Annotated[str | None, typer.Option(help="Take only this workflow's jobs.")] = None,
    steps: Annotated[int | None, typer.Option(help="Simulation: steps per job.")] = None,
    step_time: Annotated[float | None, typer.Option(help="Simulation: seconds per step.")] = None,
    idle_wait: Annotated[
        float | None, typer.Option(help="Seconds an idle slot waits before claiming anyway.")
    ] = None,
    log_level: Annotated[str | None, typer.Option(help="DEBUG, INFO, WARNING...")] = None,
) -> None:
    """Claim jobs this worker can run and run them until stopped."""
    flags: dict[str, Any] = {
        "worker_id": worker_id,
        "machine_id": machine_id,
        "slots": slots,
        "grace_seconds": grace,
        "burst": burst,
        "config_file": config,
        "redis_url": redis_url,
        "queue": queue,
        "gpu_memory_gb": gpu_memory_gb,
        "cpu_cores": cpu_cores,
        "ram_gb": ram_gb,
        "customer_isolation": customer_isolation,
        "workflow_id": workflow_id,
        "simulation_steps": steps,
        "simulation_step_time": step_time,
        "idle_wait_seconds": idle_wait,
        "log_level": log_level,
    }
    try:
        if service:
            flags["services"] = [p.strip() for s in service for p in s.split(",") if p.strip()]
        if model:
            flags["models"] = _models(model)
        if capability:
            flags["capabilities"] = _capabilities(capability)
        if allow_customer:
            flags["allowed_customers"] = allow_customer
        if deny_customer:
            flags["denied_customers"] = deny_customer
        settings = WorkerSettings(**{k: v for k, v in flags.items() if v is not None})
        telemetry = setup_telemetry(
            "emp-worker", instance_id=settings.worker_id, machine_id=settings.machine_id
        )
        worker = Worker(settings, telemetry=telemetry)
    except ValidationError as exc:
        _exit(invalid_from_validation(exc).message, 2)
    except EmpError as exc:
        _exit(exc.message, 2)
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        asyncio.run(_serve(worker))
    except (RedisError, OSError) as exc:
        _exit(f"worker {worker.id} cannot reach Redis at {settings.redis_url}: {exc}", 1)
    except EmpError as exc:
        _exit(f"worker {worker.id} cannot start: {exc.message}", 1)
    finally:
        telemetry.shutdown()  # export what is left


async def _serve(worker: Worker) -> None:
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        logger.info("worker %s received %s", worker.id, sig.name)
        # The first signal drains within the grace period; a second one stops at once.
        worker.stop(force=worker.stopping)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    await worker.run()


def _exit(message: str, code: int) -> NoReturn:
    typer.echo(f"emp-worker: {message}", err=True)
    raise typer.Exit(code)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
