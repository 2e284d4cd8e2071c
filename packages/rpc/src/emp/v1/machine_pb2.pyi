from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class MachineState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MACHINE_STATE_UNSPECIFIED: _ClassVar[MachineState]
    MACHINE_STATE_STARTING: _ClassVar[MachineState]
    MACHINE_STATE_READY: _ClassVar[MachineState]
    MACHINE_STATE_DRAINING: _ClassVar[MachineState]
    MACHINE_STATE_STOPPING: _ClassVar[MachineState]

class CommandType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COMMAND_TYPE_UNSPECIFIED: _ClassVar[CommandType]
    COMMAND_TYPE_DRAIN: _ClassVar[CommandType]
    COMMAND_TYPE_RESTART_WORKER: _ClassVar[CommandType]
MACHINE_STATE_UNSPECIFIED: MachineState
MACHINE_STATE_STARTING: MachineState
MACHINE_STATE_READY: MachineState
MACHINE_STATE_DRAINING: MachineState
MACHINE_STATE_STOPPING: MachineState
COMMAND_TYPE_UNSPECIFIED: CommandType
COMMAND_TYPE_DRAIN: CommandType
COMMAND_TYPE_RESTART_WORKER: CommandType

class WorkerSlot(_message.Message):
    __slots__ = ("worker_id", "service", "state", "current_job")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CURRENT_JOB_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    service: str
    state: str
    current_job: str
    def __init__(self, worker_id: _Optional[str] = ..., service: _Optional[str] = ..., state: _Optional[str] = ..., current_job: _Optional[str] = ...) -> None: ...

class RegisterRequest(_message.Message):
    __slots__ = ("machine_id", "gpus", "workers")
    MACHINE_ID_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    machine_id: str
    gpus: int
    workers: _containers.RepeatedCompositeFieldContainer[WorkerSlot]
    def __init__(self, machine_id: _Optional[str] = ..., gpus: _Optional[int] = ..., workers: _Optional[_Iterable[_Union[WorkerSlot, _Mapping]]] = ...) -> None: ...

class RegisterResponse(_message.Message):
    __slots__ = ("report_interval_s",)
    REPORT_INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    report_interval_s: float
    def __init__(self, report_interval_s: _Optional[float] = ...) -> None: ...

class ReportStatusRequest(_message.Message):
    __slots__ = ("machine_id", "state", "workers")
    MACHINE_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    machine_id: str
    state: MachineState
    workers: _containers.RepeatedCompositeFieldContainer[WorkerSlot]
    def __init__(self, machine_id: _Optional[str] = ..., state: _Optional[_Union[MachineState, str]] = ..., workers: _Optional[_Iterable[_Union[WorkerSlot, _Mapping]]] = ...) -> None: ...

class ReportStatusResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WatchCommandsRequest(_message.Message):
    __slots__ = ("machine_id",)
    MACHINE_ID_FIELD_NUMBER: _ClassVar[int]
    machine_id: str
    def __init__(self, machine_id: _Optional[str] = ...) -> None: ...

class Command(_message.Message):
    __slots__ = ("command_id", "type", "worker_id")
    COMMAND_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    command_id: str
    type: CommandType
    worker_id: str
    def __init__(self, command_id: _Optional[str] = ..., type: _Optional[_Union[CommandType, str]] = ..., worker_id: _Optional[str] = ...) -> None: ...

class WatchCommandsResponse(_message.Message):
    __slots__ = ("command",)
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    command: Command
    def __init__(self, command: _Optional[_Union[Command, _Mapping]] = ...) -> None: ...
