"""Between ``emp_core`` models and ``emp.v1`` messages: jobs and job events one way (server to
client), submit requests the other (into the dict ``JobSpec.parse`` validates).

JSON values travel as JSON text in ``*_json`` fields, so integers stay integers and a payload
means the same over gRPC as over REST.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from google.protobuf.timestamp_pb2 import Timestamp

from emp.v1 import job_pb2
from emp_core.errors import InvalidInput
from emp_core.jobs.events import EventType, JobEvent
from emp_core.jobs.job import Job, JobStatus

STATUS_TO_PROTO: dict[JobStatus, job_pb2.JobStatus] = {
    s: getattr(job_pb2, f"JOB_STATUS_{s.name}") for s in JobStatus
}
STATUS_FROM_PROTO = {int(v): k for k, v in STATUS_TO_PROTO.items()}
EVENT_TO_PROTO: dict[EventType, job_pb2.EventType] = {
    t: getattr(job_pb2, f"EVENT_TYPE_{t.name}") for t in EventType
}
EVENT_FROM_PROTO = {int(v): k for k, v in EVENT_TO_PROTO.items()}


def timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(value.astimezone(UTC))
    return ts


def from_timestamp(value: Timestamp) -> datetime:
    result: datetime = value.ToDatetime(tzinfo=UTC)
    return result


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def job_to_proto(job: Job) -> job_pb2.Job:
    message = job_pb2.Job(
        id=job.id, service=job.service, status=STATUS_TO_PROTO[job.status],
        priority=job.priority, payload_json=_json(job.payload),
        requirements_json=job.requirements.model_dump_json(exclude_defaults=True),
        max_attempts=job.max_attempts, timeout_s=job.timeout_s, attempts=job.attempts,
        progress=job.progress, created_at=timestamp(job.created_at),
        claimed_at=timestamp(job.claimed_at), finished_at=timestamp(job.finished_at),
    )  # fmt: skip
    optional = {
        "customer_id": job.customer_id, "workflow_id": job.workflow_id, "step": job.step,
        "total_steps": job.total_steps, "message": job.message, "error": job.error,
        "error_category": job.error_category, "error_user_message": job.error_user_message,
    }  # fmt: skip
    for name, value in optional.items():
        if value is not None:
            setattr(message, name, value)
    if job.status is JobStatus.COMPLETED:
        message.result_json = _json(job.result)
    return message


_STATUSES = {s.value: s for s in JobStatus}


def _event_status(status: str) -> job_pb2.JobStatus:
    known = _STATUSES.get(status)
    return job_pb2.JOB_STATUS_UNSPECIFIED if known is None else STATUS_TO_PROTO[known]


def event_to_proto(event: JobEvent) -> job_pb2.JobEvent:
    message = job_pb2.JobEvent(
        event_id=event.event_id, job_id=event.job_id, type=EVENT_TO_PROTO[event.type],
        status=_event_status(event.status),
        at=timestamp(event.at),
    )  # fmt: skip
    optional = {
        "service": event.service, "attempt": event.attempt, "worker_id": event.worker_id,
        "progress": event.progress, "message": event.message, "error": event.error,
        "reason": event.reason,
    }  # fmt: skip
    for name, value in optional.items():
        if value is not None:
            setattr(message, name, value)
    return message


def _object(text: str, field: str) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"{field} is not JSON: {exc}", field=field) from None
    if not isinstance(value, dict):
        raise InvalidInput(f"{field} must be a JSON object", field=field)
    return value


def submit_to_spec_data(request: job_pb2.SubmitJobRequest) -> dict[str, Any]:
    """The job spec a submit request stands for, as ``JobSpec.parse`` takes it: unset optional
    fields are left out, so the spec's defaults apply as they do over REST."""
    data: dict[str, Any] = {
        "service": request.service,
        "payload": _object(request.payload_json, "payload_json"),
    }
    requirements = _object(request.requirements_json, "requirements_json")
    if requirements:
        data["requirements"] = requirements
    for name in ("priority", "workflow_id", "step", "total_steps", "max_attempts", "timeout_s"):
        if request.HasField(name):
            data[name] = getattr(request, name)
    return data


# Names of JobSpec's fields as a gRPC caller knows them.
PROTO_FIELD = {"payload": "payload_json", "requirements": "requirements_json"}


def proto_field(field: str | None) -> str | None:
    if field is None:
        return None
    head, dot, rest = field.partition(".")
    return PROTO_FIELD.get(head, head) + dot + rest
