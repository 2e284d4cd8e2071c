from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Assignment(_message.Message):
    __slots__ = ("job_id", "token", "service", "payload_json", "attempt", "timeout_s", "workflow_id", "traceparent", "slot", "job_json", "lease_deadline_ms")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_JSON_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    TRACEPARENT_FIELD_NUMBER: _ClassVar[int]
    SLOT_FIELD_NUMBER: _ClassVar[int]
    JOB_JSON_FIELD_NUMBER: _ClassVar[int]
    LEASE_DEADLINE_MS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    token: str
    service: str
    payload_json: str
    attempt: int
    timeout_s: float
    workflow_id: str
    traceparent: str
    slot: int
    job_json: str
    lease_deadline_ms: int
    def __init__(self, job_id: _Optional[str] = ..., token: _Optional[str] = ..., service: _Optional[str] = ..., payload_json: _Optional[str] = ..., attempt: _Optional[int] = ..., timeout_s: _Optional[float] = ..., workflow_id: _Optional[str] = ..., traceparent: _Optional[str] = ..., slot: _Optional[int] = ..., job_json: _Optional[str] = ..., lease_deadline_ms: _Optional[int] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("worker_id", "services", "capabilities_json", "slots")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_JSON_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    services: _containers.RepeatedScalarFieldContainer[str]
    capabilities_json: str
    slots: int
    def __init__(self, worker_id: _Optional[str] = ..., services: _Optional[_Iterable[str]] = ..., capabilities_json: _Optional[str] = ..., slots: _Optional[int] = ...) -> None: ...

class Ready(_message.Message):
    __slots__ = ("slot", "first_queue")
    SLOT_FIELD_NUMBER: _ClassVar[int]
    FIRST_QUEUE_FIELD_NUMBER: _ClassVar[int]
    slot: int
    first_queue: str
    def __init__(self, slot: _Optional[int] = ..., first_queue: _Optional[str] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("job_id", "token")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    token: str
    def __init__(self, job_id: _Optional[str] = ..., token: _Optional[str] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("job_id", "token", "progress", "message", "preview")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    token: str
    progress: float
    message: str
    preview: str
    def __init__(self, job_id: _Optional[str] = ..., token: _Optional[str] = ..., progress: _Optional[float] = ..., message: _Optional[str] = ..., preview: _Optional[str] = ...) -> None: ...

class Complete(_message.Message):
    __slots__ = ("job_id", "token", "result_json", "claim_next", "slot")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    RESULT_JSON_FIELD_NUMBER: _ClassVar[int]
    CLAIM_NEXT_FIELD_NUMBER: _ClassVar[int]
    SLOT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    token: str
    result_json: str
    claim_next: bool
    slot: int
    def __init__(self, job_id: _Optional[str] = ..., token: _Optional[str] = ..., result_json: _Optional[str] = ..., claim_next: _Optional[bool] = ..., slot: _Optional[int] = ...) -> None: ...

class Fail(_message.Message):
    __slots__ = ("job_id", "token", "error", "retryable", "delay_s", "classify")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    RETRYABLE_FIELD_NUMBER: _ClassVar[int]
    DELAY_S_FIELD_NUMBER: _ClassVar[int]
    CLASSIFY_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    token: str
    error: str
    retryable: bool
    delay_s: float
    classify: bool
    def __init__(self, job_id: _Optional[str] = ..., token: _Optional[str] = ..., error: _Optional[str] = ..., retryable: _Optional[bool] = ..., delay_s: _Optional[float] = ..., classify: _Optional[bool] = ...) -> None: ...

class Release(_message.Message):
    __slots__ = ("job_id", "token", "reason")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    token: str
    reason: str
    def __init__(self, job_id: _Optional[str] = ..., token: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class Loras(_message.Message):
    __slots__ = ("sha256",)
    SHA256_FIELD_NUMBER: _ClassVar[int]
    sha256: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, sha256: _Optional[_Iterable[str]] = ...) -> None: ...

class ConnectRequest(_message.Message):
    __slots__ = ("hello", "ready", "heartbeat", "progress", "complete", "fail", "release", "loras", "request_id")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    FAIL_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    LORAS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    ready: Ready
    heartbeat: Heartbeat
    progress: Progress
    complete: Complete
    fail: Fail
    release: Release
    loras: Loras
    request_id: int
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., ready: _Optional[_Union[Ready, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., progress: _Optional[_Union[Progress, _Mapping]] = ..., complete: _Optional[_Union[Complete, _Mapping]] = ..., fail: _Optional[_Union[Fail, _Mapping]] = ..., release: _Optional[_Union[Release, _Mapping]] = ..., loras: _Optional[_Union[Loras, _Mapping]] = ..., request_id: _Optional[int] = ...) -> None: ...

class CancelAssignment(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class Refused(_message.Message):
    __slots__ = ("job_id", "reason")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    reason: str
    def __init__(self, job_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class Welcome(_message.Message):
    __slots__ = ("lease_seconds",)
    LEASE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    lease_seconds: float
    def __init__(self, lease_seconds: _Optional[float] = ...) -> None: ...

class Done(_message.Message):
    __slots__ = ("job_id", "outcome")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    outcome: str
    def __init__(self, job_id: _Optional[str] = ..., outcome: _Optional[str] = ...) -> None: ...

class NoJob(_message.Message):
    __slots__ = ("slot", "retry_in")
    SLOT_FIELD_NUMBER: _ClassVar[int]
    RETRY_IN_FIELD_NUMBER: _ClassVar[int]
    slot: int
    retry_in: float
    def __init__(self, slot: _Optional[int] = ..., retry_in: _Optional[float] = ...) -> None: ...

class Wake(_message.Message):
    __slots__ = ("slot", "queue")
    SLOT_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    slot: int
    queue: str
    def __init__(self, slot: _Optional[int] = ..., queue: _Optional[str] = ...) -> None: ...

class ConnectResponse(_message.Message):
    __slots__ = ("welcome", "assignment", "cancel", "refused", "done", "no_job", "wake", "reply_to")
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    ASSIGNMENT_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    NO_JOB_FIELD_NUMBER: _ClassVar[int]
    WAKE_FIELD_NUMBER: _ClassVar[int]
    REPLY_TO_FIELD_NUMBER: _ClassVar[int]
    welcome: Welcome
    assignment: Assignment
    cancel: CancelAssignment
    refused: Refused
    done: Done
    no_job: NoJob
    wake: Wake
    reply_to: int
    def __init__(self, welcome: _Optional[_Union[Welcome, _Mapping]] = ..., assignment: _Optional[_Union[Assignment, _Mapping]] = ..., cancel: _Optional[_Union[CancelAssignment, _Mapping]] = ..., refused: _Optional[_Union[Refused, _Mapping]] = ..., done: _Optional[_Union[Done, _Mapping]] = ..., no_job: _Optional[_Union[NoJob, _Mapping]] = ..., wake: _Optional[_Union[Wake, _Mapping]] = ..., reply_to: _Optional[int] = ...) -> None: ...
