"""The connector contract, run against every connector with the in-memory context; and the
simulation connector's own knobs."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from worker_helpers import make_job, make_worker_settings

from emp_worker.config import WorkerSettings
from emp_worker.connectors import (
    Abort,
    Connector,
    JobContext,
    RecordingContext,
    SimulationConnector,
    available_connectors,
    build_connectors,
)
from emp_worker.connectors.simulation import SimulatedFailure

CONTRACT = {
    "simulation": (SimulationConnector(steps=4, step_time=0), {"steps": 4}),
}


# Connectors that need a model or a server run the same contract in their own files, against a
# real tiny pipeline (test_diffusers_connector.py) and a ComfyUI test server
# (test_comfyui_connector.py): progress that only grows to 100, JSON results, cancellation.
COVERED_ELSEWHERE = {"diffusers", "comfyui"}
# Runs nothing, so it reports no progress: its own test below.
NO_WORK = {"noop"}


def test_every_registered_connector_has_a_contract_case():
    assert sorted(set(CONTRACT) | COVERED_ELSEWHERE | NO_WORK) == available_connectors()


@pytest.mark.parametrize("name", sorted(CONTRACT))
async def test_contract_runs_reports_progress_and_returns_json(name):
    connector, payload = CONTRACT[name]
    assert isinstance(connector, Connector)
    assert connector.service == name
    ctx = RecordingContext()
    assert isinstance(ctx, JobContext)

    result = await connector.run(make_job(service=name, payload=payload), ctx)

    assert orjson.loads(orjson.dumps(result)) == result
    pcts = [pct for pct, _ in ctx.reports]
    assert pcts
    assert pcts == sorted(pcts)
    assert pcts[-1] == 100
    assert all(0 <= p <= 100 for p in pcts)


@pytest.mark.parametrize("name", sorted(CONTRACT))
async def test_contract_honours_cancellation(name):
    connector, _ = CONTRACT[name]
    slow = {"steps": 1000, "step_time": 1}
    task = asyncio.create_task(
        connector.run(make_job(service=name, payload=slow), RecordingContext())
    )
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)


async def test_noop_returns_none_at_once_without_progress():
    (connector,) = build_connectors(WorkerSettings(services=["noop"])).values()
    assert isinstance(connector, Connector)
    assert connector.service == "noop"
    ctx = RecordingContext()
    assert await connector.run(make_job(service="noop", payload={"steps": 5}), ctx) is None
    assert ctx.reports == []


async def test_simulation_payload_overrides_steps_and_step_time():
    ctx = RecordingContext()
    result = await SimulationConnector(steps=10, step_time=5).run(
        make_job(payload={"steps": 2, "step_time": 0, "seed": 7}), ctx
    )
    assert ctx.reports == [(50.0, "step 1 of 2"), (100.0, "step 2 of 2")]
    assert (result["steps"], result["seed"]) == (2, 7)


@pytest.mark.parametrize(("attempt", "fails"), [(1, True), (2, True), (3, False)])
async def test_simulation_fails_while_attempt_is_at_most_fail_times(attempt, fails):
    job = make_job(
        payload={"steps": 4, "fail_with": "CUDA out of memory", "fail_times": 2}, attempts=attempt
    )
    ctx = RecordingContext()
    if fails:
        with pytest.raises(SimulatedFailure, match=r"^CUDA out of memory$"):
            await SimulationConnector(step_time=0).run(job, ctx)
        assert [p for p, _ in ctx.reports] == [25.0]  # failed half-way
    else:
        await SimulationConnector(step_time=0).run(job, ctx)


async def test_simulation_without_fail_times_always_fails():
    job = make_job(payload={"steps": 0, "fail_with": "boom"}, attempts=50)
    with pytest.raises(SimulatedFailure, match="boom"):
        await SimulationConnector().run(job, RecordingContext())


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        ({"steps": -1}, "payload.steps must be an integer"),
        ({"steps": 1.5}, "payload.steps must be an integer"),
        ({"steps": True}, "payload.steps must be an integer"),
        ({"step_time": "slow"}, "payload.step_time must be a number"),
        ({"fail_with": 3}, "payload.fail_with must be a non-empty text"),
        ({"fail_with": "x", "fail_times": -1}, "payload.fail_times must be a whole number"),
    ],
)
async def test_simulation_refuses_a_malformed_payload(payload, problem):
    with pytest.raises(Abort, match=problem):
        await SimulationConnector(step_time=0).run(make_job(payload=payload), RecordingContext())


def test_build_connectors_uses_the_settings(settings):
    built = build_connectors(make_worker_settings(settings, simulation_steps=7))
    assert built["simulation"] == SimulationConnector(steps=7, step_time=0)
