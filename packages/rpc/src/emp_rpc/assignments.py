"""A claimed job on the worker stream (``emp.v1.Assignment``), both ways: the server builds it
from the ``ClaimedJob`` its claim returned, the worker's gRPC transport turns it back into one.

The whole job record travels (``job_json``, emp_core's ``Job`` without its payload, which is
``payload_json``), so a worker runs a job it got over gRPC exactly as one it claimed from Redis:
its LoRAs, owner, attempts and trace context included.
"""

from __future__ import annotations

import orjson

from emp.v1 import worker_pb2
from emp_core.errors import InvalidInput
from emp_core.jobs.job import Job
from emp_core.queue.queue import ClaimedJob


def assignment_to_proto(claimed: ClaimedJob, slot: int = 0) -> worker_pb2.Assignment:
    job = claimed.job
    message = worker_pb2.Assignment(
        job_id=job.id, token=claimed.token, service=job.service,
        payload_json=orjson.dumps(job.payload).decode(), attempt=job.attempts,
        timeout_s=job.timeout_s, slot=slot, job_json=job.model_dump_json(exclude={"payload"}),
        lease_deadline_ms=claimed.lease_deadline_ms,
    )  # fmt: skip
    if job.workflow_id:
        message.workflow_id = job.workflow_id
    if job.traceparent:
        message.traceparent = job.traceparent
    return message


def claimed_from_proto(message: worker_pb2.Assignment) -> ClaimedJob:
    """The claim an assignment stands for; ``InvalidInput`` when it does not hold a job."""
    try:
        record = orjson.loads(message.job_json)
        record["payload"] = orjson.loads(message.payload_json or "{}")
        job = Job.model_validate(record)
    except (orjson.JSONDecodeError, TypeError, ValueError) as exc:
        raise InvalidInput(
            f"assignment of job {message.job_id!r} does not hold a job: {exc}", field="job_json"
        ) from None
    return ClaimedJob(job, message.token, message.lease_deadline_ms)
