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
    MACHINE_STATE_RUNNING: _ClassVar[MachineState]
    MACHINE_STATE_STOPPING: _ClassVar[MachineState]
    MACHINE_STATE_STOPPED: _ClassVar[MachineState]

class CommandType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COMMAND_TYPE_UNSPECIFIED: _ClassVar[CommandType]
    COMMAND_TYPE_DRAIN: _ClassVar[CommandType]
    COMMAND_TYPE_RESTART_WORKER: _ClassVar[CommandType]
MACHINE_STATE_UNSPECIFIED: MachineState
MACHINE_STATE_STARTING: MachineState
MACHINE_STATE_RUNNING: MachineState
MACHINE_STATE_STOPPING: MachineState
MACHINE_STATE_STOPPED: MachineState
COMMAND_TYPE_UNSPECIFIED: CommandType
COMMAND_TYPE_DRAIN: CommandType
COMMAND_TYPE_RESTART_WORKER: CommandType

class WorkerSlot(_message.Message):
    __slots__ = ("worker_id", "service", "index", "gpu", "state", "restarts")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    GPU_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    RESTARTS_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    service: str
    index: int
    gpu: int
    state: str
    restarts: int
    def __init__(self, worker_id: _Optional[str] = ..., service: _Optional[str] = ..., index: _Optional[int] = ..., gpu: _Optional[int] = ..., state: _Optional[str] = ..., restarts: _Optional[int] = ...) -> None: ...

class RegisterRequest(_message.Message):
    __slots__ = ("machine_id", "hostname", "version", "gpus", "workers")
    MACHINE_ID_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    machine_id: str
    hostname: str
    version: str
    gpus: int
    workers: _containers.RepeatedCompositeFieldContainer[WorkerSlot]
    def __init__(self, machine_id: _Optional[str] = ..., hostname: _Optional[str] = ..., version: _Optional[str] = ..., gpus: _Optional[int] = ..., workers: _Optional[_Iterable[_Union[WorkerSlot, _Mapping]]] = ...) -> None: ...

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
