"""``emp-worker``: run one worker process until SIGTERM or Ctrl-C (``--burst``: until drained).

Settings come from these flags, then ``EMP_*`` environment variables, then a config file
(``--config worker.toml``); see ``emp_worker.config``. The first SIGTERM or Ctrl-C stops claiming
and gives running jobs ``--grace`` seconds; a second one hands them back to the queue at once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Any, NoReturn

from pydantic import ValidationError
from redis.exceptions import RedisError

from emp_core.errors import EmpError, InvalidInput, invalid_from_validation
from emp_core.telemetry import setup_telemetry
from emp_worker.config import WorkerSettings
from emp_worker.transport import TransportError
from emp_worker.worker import Worker

logger = logging.getLogger("emp_worker")


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


def _parser() -> argparse.ArgumentParser:
    # argparse, not a CLI toolkit: a GPU worker's install carries no typer/click/rich.
    p = argparse.ArgumentParser(
        prog="emp-worker", description="Claim jobs this worker can run and run them until stopped."
    )
    add = p.add_argument
    add("-s", "--service", action="append", help="Service to run (repeat, or a,b).")
    add("--worker-id", help="Default: {hostname}-{pid}.")
    add("--machine-id", help="The machine this worker runs on.")
    add("--slots", type=int, help="Jobs run at once (default 1).")
    add("--grace", type=float, help="Seconds running jobs get after SIGTERM (default 30).")
    add("--burst", action=argparse.BooleanOptionalAction, help="Exit once nothing is left.")
    add("--config", type=Path, help="A .toml or .json settings file.")
    add("--transport", choices=["redis", "grpc"], help="How to reach the queue (default redis).")
    add("--api", help="grpc transport: the API's gRPC HOST:PORT (EMP_API_ADDRESS); the admin "
        "token comes from EMP_API_TOKEN.")  # fmt: skip
    add("--api-tls", action=argparse.BooleanOptionalAction, help="grpc transport: TLS.")
    add("--api-ca-file", type=Path, help="grpc transport: a CA bundle to trust (PEM).")
    add("--redis-url", help="Default: EMP_REDIS_URL.")
    add(
        "--queue",
        action="append",
        help="Queue to serve (repeat, or a,b; default: EMP_QUEUE); --transport redis only.",
    )
    add("--gpu-memory-gb", type=float)
    add("--cpu-cores", type=int)
    add("--ram-gb", type=float)
    add("--model", action="append", help="SERVICE:MODEL[,MODEL...] held (repeat).")
    add("--capability", action="append", help="PATH=VALUE custom capability (repeat).")
    add("--customer-isolation", help="none, loose or strict.")
    add("--allow-customer", action="append", help="Only these customers.")
    add("--deny-customer", action="append", help="Never these customers.")
    add("--workflow-id", help="Take only this workflow's jobs.")
    add("--steps", type=int, help="Simulation: steps per job.")
    add("--step-time", type=float, help="Simulation: seconds per step.")
    add("--diffusers-model", type=Path, help="diffusers: the model folder (diffusers format).")
    add("--diffusers-model-name", help="diffusers: the model name advertised (default: folder).")
    add("--diffusers-device", help="diffusers: auto, cpu, cuda, cuda:1...")
    add("--comfyui-url", help="comfyui: the ComfyUI server (default http://127.0.0.1:8188).")
    add("--comfyui-loras-dir", type=Path, help="comfyui: ComfyUI's models/loras folder.")
    add("--idle-wait", type=float, help="Seconds an idle slot waits before claiming anyway.")
    add("--lora-cache-dir", type=Path, help="Folder of the workers' LoRA caches.")
    add("--lora-cache-gb", type=float, help="The LoRA cache's byte budget in GB (default 50).")
    add("--log-level", help="DEBUG, INFO, WARNING...")
    return p


def _queues(given: list[str]) -> dict[str, Any]:
    """One ``--queue`` names the worker's queue, as before; several (``--queue a --queue b``)
    are all served, and EMP_QUEUE stays the home of the error patterns and outputs. Either way
    the flag is recorded in ``queues`` too, so that ``--transport grpc`` can refuse it."""
    names = [p.strip() for q in given for p in q.split(",") if p.strip()]
    return {"queue": names[0], "queues": names} if len(names) == 1 else {"queues": names}


def run(argv: list[str] | None = None) -> None:
    """Claim jobs this worker can run and run them until stopped."""
    args = _parser().parse_args(argv)
    service, model, capability = args.service, args.model, args.capability
    allow_customer, deny_customer = args.allow_customer, args.deny_customer
    flags: dict[str, Any] = {
        "worker_id": args.worker_id,
        "machine_id": args.machine_id,
        "slots": args.slots,
        "grace_seconds": args.grace,
        "burst": args.burst,
        "config_file": args.config,
        "redis_url": args.redis_url,
        "transport": args.transport,
        "api_address": args.api,
        "api_tls": args.api_tls,
        "api_ca_file": args.api_ca_file,
        "gpu_memory_gb": args.gpu_memory_gb,
        "cpu_cores": args.cpu_cores,
        "ram_gb": args.ram_gb,
        "customer_isolation": args.customer_isolation,
        "workflow_id": args.workflow_id,
        "simulation_steps": args.steps,
        "simulation_step_time": args.step_time,
        "idle_wait_seconds": args.idle_wait,
        "log_level": args.log_level,
        "diffusers_model": args.diffusers_model,
        "diffusers_model_name": args.diffusers_model_name,
        "diffusers_device": args.diffusers_device,
        "comfyui_url": args.comfyui_url,
        "comfyui_loras_dir": args.comfyui_loras_dir,
        "lora_cache_dir": args.lora_cache_dir,
        "lora_cache_gb": args.lora_cache_gb,
    }
    try:
        if service:
            flags["services"] = [p.strip() for s in service for p in s.split(",") if p.strip()]
        if args.queue:
            flags.update(_queues(args.queue))
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
    except TransportError as exc:  # it names what it could not reach
        _exit(f"worker {worker.id}: {exc}", 1)
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
    print(f"emp-worker: {message}", file=sys.stderr)
    raise SystemExit(code)


def main() -> None:
    run()


if __name__ == "__main__":
    main()
