"""The ``emp`` command: submit and inspect jobs, load the Function library, run the reaper.

Every command reads the ``EMP_*`` settings (``EMP_REDIS_URL``, ``EMP_QUEUE``, …);
``--redis-url`` and ``--queue`` override them.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import orjson
import typer
from redis.exceptions import ConnectionError as RedisConnectionError
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from emp_cli.admin import db_app, tokens_app, users_app
from emp_cli.env import env_app
from emp_cli.output import err, error, summarise
from emp_cli.output import out as console
from emp_cli.patterns import patterns_app
from emp_cli.secrets import secrets_app
from emp_core.errors import EmpError
from emp_core.jobs.events import follow
from emp_core.jobs.job import DEFAULT_PRIORITY, Job, JobStatus
from emp_core.queue.fairness import DEFAULT_WEIGHT, FairShares
from emp_core.queue.queue import Queue
from emp_core.queue.queues import Queues
from emp_core.redis.client import connect
from emp_core.registry.workers import unserved_warning
from emp_core.settings import QueueSettings

app = typer.Typer(help="EMP job queue command line.", no_args_is_help=True, add_completion=False)
functions_app = typer.Typer(help="The Redis Function library.", no_args_is_help=True)
app.add_typer(functions_app, name="functions")
app.add_typer(users_app, name="users")
app.add_typer(tokens_app, name="tokens")
app.add_typer(db_app, name="db")
app.add_typer(env_app, name="env")
app.add_typer(patterns_app, name="patterns")
app.add_typer(secrets_app, name="secrets")
fair_app = typer.Typer(
    help="Fair shares between customers: weights (default 1, equal shares).", no_args_is_help=True
)
app.add_typer(fair_app, name="fair-shares")

T = TypeVar("T")

RedisUrl = Annotated[str | None, typer.Option(help="Redis URL (default: EMP_REDIS_URL).")]
QueueName = Annotated[str | None, typer.Option(help="Queue name (default: EMP_QUEUE).")]


def _settings(redis_url: str | None, queue: str | None) -> QueueSettings:
    overrides: dict[str, Any] = {}
    if redis_url:
        overrides["redis_url"] = redis_url
    if queue:
        overrides["queue"] = queue
    return QueueSettings(**overrides)


def _where(q: Queue, queue: str | None) -> Queue | Queues:
    """The queue named by --queue, else every queue the settings name (the job is looked for
    in each, N reads at most)."""
    return q if queue else Queues(q.redis, q.settings)


def _run(settings: QueueSettings, body: Callable[[Queue], Awaitable[T]]) -> T:
    """Run ``body`` with a connected Queue; print domain and connection errors as one line."""

    async def main() -> T:
        client = connect(settings.redis_url)
        try:
            return await body(Queue(client, settings))
        finally:
            await client.aclose()

    try:
        return asyncio.run(main())
    except EmpError as exc:
        error(exc.message)
        raise typer.Exit(2) from None
    except RedisConnectionError as exc:
        error(f"cannot reach Redis at {settings.redis_url}: {exc}")
        raise typer.Exit(3) from None


def _json_arg(text: str, name: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        error(f"--{name} is not valid JSON: {exc}")
        raise typer.Exit(2) from None


def _job_table(job: Job) -> Table:
    table = Table(show_header=False, box=None)
    for name, value in job.model_dump(exclude={"payload", "requirements"}).items():
        if value not in (None, ""):
            table.add_row(Text(name, style="bold"), Text(str(value)))
    table.add_row(Text("requirements", style="bold"), Text(job.requirements.canonical_json()))
    return table


@app.command()
def submit(
    service: Annotated[str, typer.Option(help="Service that runs the job, e.g. simulation.")],
    payload: Annotated[str, typer.Option(help="Payload as a JSON object.")] = "{}",
    priority: Annotated[int, typer.Option(help="0-1000, higher first.")] = DEFAULT_PRIORITY,
    requirements: Annotated[str, typer.Option(help="Requirements as a JSON object.")] = "{}",
    customer: Annotated[str | None, typer.Option(help="Customer id.")] = None,
    max_attempts: Annotated[int, typer.Option(help="Attempts before the job fails.")] = 3,
    count: Annotated[int, typer.Option(help="Submit this many copies.", min=1)] = 1,
    wait: Annotated[
        bool, typer.Option(help="Follow the job until it ends, showing progress.")
    ] = False,
    redis_url: RedisUrl = None,
    queue: QueueName = None,
) -> None:
    """Submit a job (or --count copies) and print its id; --wait follows it to the end."""
    spec = {
        "service": service,
        "priority": priority,
        "payload": _json_arg(payload, "payload"),
        "requirements": _json_arg(requirements, "requirements"),
        "customer_id": customer,
        "max_attempts": max_attempts,
    }
    settings = _settings(redis_url, queue)
    if queue is None:  # EMP_QUEUE_ROUTES: the service's queue
        settings = settings.model_copy(update={"queue": settings.queue_for(service)})

    async def body(q: Queue) -> int:
        await q.functions.check()
        ids = await q.submit_many([spec] * count)
        for job_id in ids:
            console.print(job_id, highlight=False)
        if warning := await unserved_warning(q.redis, q.keys, service):
            err.print(Text.assemble(("warning:", "yellow"), " ", warning))
        if not wait:
            return 0
        results = await asyncio.gather(*(_watch(q, job_id) for job_id in ids))
        return 0 if all(status == JobStatus.COMPLETED for status in results) else 1

    code = _run(settings, body)
    raise typer.Exit(code)


async def _watch(q: Queue, job_id: str) -> JobStatus:
    """Show one job's progress until it ends; returns its final status."""
    columns = (TextColumn("{task.description}", markup=False), BarColumn(), TaskProgressColumn(),
               TextColumn("{task.fields[note]}", markup=False), TimeElapsedColumn())  # fmt: skip
    with Progress(*columns, console=err, transient=False) as bar:
        task = bar.add_task(f"job {job_id[:8]}", total=100, note="pending")
        async for event in follow(q.redis, q.keys, job_id):
            note = event.message or event.error or event.reason or event.status
            if event.worker_id:
                note = f"{note} on {event.worker_id}"
            bar.update(task, completed=event.progress or 0, note=f"{event.type}: {note}")
            if event.type == "completed":
                bar.update(task, completed=100)
    job = await q.get(job_id)
    if job.status == JobStatus.COMPLETED:
        shown = orjson.dumps(summarise(job.result)).decode()
        console.print(f"job {job_id} completed: {shown}")
    else:
        err.print(f"job {job_id} {job.status} after {job.attempts} attempt(s): {job.error}")
    return job.status


@app.command()
def get(
    job_id: str, json: Annotated[bool, typer.Option(help="Print JSON.")] = False,
    redis_url: RedisUrl = None, queue: QueueName = None,
) -> None:  # fmt: skip
    """Show one job."""
    job = _run(_settings(redis_url, queue), lambda q: _where(q, queue).get(job_id))
    if json:
        sys.stdout.write(job.model_dump_json(indent=2) + "\n")
    else:
        console.print(_job_table(job))


@app.command()
def cancel(job_id: str, redis_url: RedisUrl = None, queue: QueueName = None) -> None:
    """Cancel a job that has not finished."""
    previous = _run(
        _settings(redis_url, queue),
        lambda q: _where(q, queue).cancel(job_id, "cancelled from the CLI"),
    )
    console.print(f"job {job_id} cancelled (it was {previous})")


@app.command()
def depth(redis_url: RedisUrl = None, queue: QueueName = None) -> None:
    """Pending jobs per service."""
    counts = _run(_settings(redis_url, queue), lambda q: q.depth())
    table = Table("service", "pending")
    for service, n in sorted(counts.items()):
        table.add_row(service, str(n))
    console.print(table if counts else "no pending jobs")


@app.command()
def reap(redis_url: RedisUrl = None, queue: QueueName = None) -> None:
    """Requeue jobs of workers whose lease expired and promote due retries, once."""
    requeued, failed, promoted = _run(_settings(redis_url, queue), lambda q: q.reap())
    console.print(f"requeued {requeued}, failed {failed}, promoted {promoted}")


@functions_app.command("load")
def functions_load(redis_url: RedisUrl = None, queue: QueueName = None) -> None:
    """Install this code's library (FUNCTION LOAD REPLACE) and check its version."""
    version = _run(_settings(redis_url, queue), lambda q: q.functions.load())
    console.print(f"emp library v{version} loaded")


@fair_app.command("set")
def fair_set(
    customer: str, weight: float, redis_url: RedisUrl = None, queue: QueueName = None
) -> None:
    """Give CUSTOMER a share of WEIGHT within each priority, relative to others' (default 1):
    with weight 3 against 1 it gets three claims for the other's one while both wait."""
    _run(
        _settings(redis_url, queue),
        lambda q: FairShares(q.redis, q.keys).set_weight(customer, weight),
    )
    console.print(f"customer {customer} has weight {weight:g}")


@fair_app.command("reset")
def fair_reset(customer: str, redis_url: RedisUrl = None, queue: QueueName = None) -> None:
    """Back to the default weight."""
    _run(_settings(redis_url, queue), lambda q: FairShares(q.redis, q.keys).reset_weight(customer))
    console.print(f"customer {customer} has weight {DEFAULT_WEIGHT:g}")


@fair_app.command("list")
def fair_list(
    service: Annotated[
        str | None, typer.Option(help="Also show who is ahead of its share in this service.")
    ] = None,
    redis_url: RedisUrl = None,
    queue: QueueName = None,
) -> None:
    """The weights set (everyone else has 1); with --service, the customers served ahead."""

    async def body(q: Queue) -> None:
        shares = FairShares(q.redis, q.keys)
        weights = await shares.weights()
        table = Table("customer", "weight")
        for customer, weight in sorted(weights.items()):
            table.add_row(customer, f"{weight:g}")
        console.print(table if weights else "no weights set: every customer has weight 1")
        if service:
            ahead = Table("customer", "weight", "jobs ahead of its turn")
            for share in await shares.shares(service):
                ahead.add_row(share.customer_id or "(no owner)", f"{share.weight:g}",
                              f"{share.ahead:.2f}")  # fmt: skip
            console.print(ahead)

    _run(_settings(redis_url, queue), body)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
