"""The worker's settings: command-line flags over ``EMP_*`` environment over a config file.

A config file is TOML (``.toml``) or JSON (``.json``) with the field names below as keys, e.g.::

    services = ["simulation"]
    slots = 2
    gpu_memory_gb = 24
    [models]
    simulation = ["sd15"]
    [capabilities]
    "gpu.vendor" = "nvidia"

It is named by ``--config`` or ``EMP_CONFIG_FILE``. Unknown keys in it are refused, so a typo
never goes unnoticed (the environment may hold other processes' ``EMP_*`` variables, so unknown
variables there are ignored).
"""

from __future__ import annotations

import json
import os
import re
import socket
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, JsonValue, SecretStr, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from emp_core.errors import InvalidInput
from emp_core.jobs.capabilities import Hardware, Identifier, Service, WorkerCapabilities
from emp_core.settings import QUEUE_NAME, QueueSettings


def default_worker_id() -> str:
    """``{hostname}-{pid}``, reduced to the characters a worker id may hold."""
    host = re.sub(r"[^A-Za-z0-9_.:-]", "-", socket.gethostname()).strip("-.") or "worker"
    return f"{host[:100]}-{os.getpid()}"


def _split(value: Any) -> Any:
    """``"a, b"`` -> ``["a", "b"]`` for list settings given as one string (env, flags)."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class _ConfigFileSource(PydanticBaseSettingsSource):
    """Values from the TOML or JSON file named by the sources above it (flag or environment)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # the whole file is read in __call__

    def __call__(self) -> dict[str, Any]:
        path = self.current_state.get("config_file")
        if not path:
            return {}
        data = read_config_file(Path(path))
        unknown = sorted(set(data) - set(self.settings_cls.model_fields) - {"config_file"})
        if unknown:
            raise InvalidInput(
                f"config file {path}: unknown setting{'s' if len(unknown) > 1 else ''} "
                f"{', '.join(unknown)}",
                field=unknown[0],
            )
        return data


def read_config_file(path: Path) -> dict[str, Any]:
    """The settings in a ``.toml`` or ``.json`` file as a dict."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise InvalidInput(
            f"config file {path} cannot be read: {exc}", field="config_file"
        ) from None
    import tomllib  # here: only a worker started with a config file pays for the import

    try:
        if path.suffix == ".toml":
            data: Any = tomllib.loads(text)
        elif path.suffix == ".json":
            data = json.loads(text)
        else:
            raise InvalidInput(
                f"config file {path} must end in .toml or .json", field="config_file"
            )
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(
            f"config file {path} does not parse: {exc}", field="config_file"
        ) from None
    if not isinstance(data, dict):
        raise InvalidInput(f"config file {path} must hold a table of settings", field="config_file")
    return data


class WorkerSettings(QueueSettings):
    """Everything a worker process needs: the queue's settings plus what this worker is."""

    model_config = SettingsConfigDict(env_prefix="EMP_", env_file=".env", extra="ignore")

    config_file: Path | None = None

    # --- identity and capabilities ---------------------------------------------------------------
    worker_id: Identifier = Field(default_factory=default_worker_id)
    machine_id: Identifier | None = None
    services: Annotated[list[Service], NoDecode] = Field(
        default_factory=lambda: ["simulation"], min_length=1
    )
    gpu_memory_gb: float = Field(default=0, ge=0)
    cpu_cores: int = Field(default=0, ge=0)
    ram_gb: float = Field(default=0, ge=0)
    models: dict[str, list[str]] = Field(default_factory=dict)
    customer_isolation: Literal["none", "loose", "strict"] = "none"
    allowed_customers: Annotated[list[Identifier] | None, NoDecode] = None
    denied_customers: Annotated[list[Identifier], NoDecode] = Field(default_factory=list)
    workflow_id: Identifier | None = None
    capabilities: dict[str, JsonValue] = Field(default_factory=dict)

    # --- how the worker reaches the queue ---------------------------------------------------------
    # The queues this worker serves (EMP_QUEUES=a,b; --queue a --queue b), claimed from in turn;
    # empty: EMP_QUEUE alone. The redis transport only: the API serves a gRPC worker from the
    # queues its services are routed to.
    queues: Annotated[list[Annotated[str, Field(pattern=QUEUE_NAME)]], NoDecode] = Field(
        default_factory=list, max_length=64
    )
    # redis: Redis itself (EMP_REDIS_URL); grpc: the API's WorkerService (a host that reaches only
    # the API), which needs the emp-worker[grpc] extra, the API's gRPC address and an admin token.
    transport: Literal["redis", "grpc"] = "redis"
    api_address: str | None = Field(default=None, min_length=1, max_length=300)  # HOST:PORT
    # The token is read from the environment or the config file, never a flag (ps shows flags).
    api_token: SecretStr | None = None
    api_tls: bool = False  # TLS to the API; api_ca_file trusts a private CA (else system roots)
    api_ca_file: Path | None = None
    api_connect_timeout_seconds: float = Field(default=10.0, gt=0)

    # --- running ---------------------------------------------------------------------------------
    slots: int = Field(default=1, ge=1, le=64)
    grace_seconds: float = Field(default=30.0, ge=0)
    burst: bool = False
    # How long an idle slot waits for a wake-up before claiming anyway. Wake-ups arrive within
    # milliseconds; this only covers messages lost while the subscription reconnected.
    idle_wait_seconds: float = Field(default=5.0, gt=0)
    registry_refresh_seconds: float = Field(default=5.0, gt=0)
    # Error patterns (ADR-009) are swapped when a new version is announced; this re-read covers
    # an announcement missed while the subscription reconnected.
    patterns_refresh_seconds: float = Field(default=300.0, gt=0)
    log_level: str = "INFO"

    # --- the LoRA cache (ADR-010) -----------------------------------------------------------------
    # The folder under which each worker keeps its cache in a folder named by its id (two
    # processes must not share one cache); by default $XDG_CACHE_HOME/emp/loras or ~/.cache/...
    lora_cache_dir: Path | None = None
    lora_cache_gb: float = Field(default=50.0, gt=0)
    lora_cache_ttl_seconds: float = Field(default=7 * 24 * 3600.0, gt=0)

    # --- the simulation connector ----------------------------------------------------------------
    simulation_steps: int = Field(default=10, ge=0, le=100_000)
    simulation_step_time: float = Field(default=0.1, ge=0, le=3600)

    # --- the diffusers connector -----------------------------------------------------------------
    # A local diffusers-format folder (model_index.json and its component folders); advertised as
    # the model ``diffusers_model_name`` (default: the folder's name) of service ``diffusers``.
    diffusers_model: Path | None = None
    diffusers_model_name: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    diffusers_device: str = "auto"  # auto: cuda when torch sees a GPU, else cpu
    diffusers_dtype: Literal["auto", "float16", "bfloat16", "float32"] = "auto"
    # The largest width or height a job may ask for (default: twice the model's native size).
    diffusers_max_side: int | None = Field(default=None, ge=64, le=8192)
    # Load the model when the worker starts rather than on its first job.
    diffusers_warm: bool = True
    # torch threads on the CPU (0: torch's default, one per core); no effect on a GPU.
    diffusers_cpu_threads: int = Field(default=1, ge=0, le=256)

    # --- the comfyui connector -------------------------------------------------------------------
    comfyui_url: str = "http://127.0.0.1:8188"
    # ComfyUI's models/loras folder: a job's LoRAs are linked into its emp/ subfolder.
    comfyui_loras_dir: Path | None = None
    comfyui_idle_timeout_seconds: float = Field(default=300.0, gt=0)
    comfyui_history_wait_seconds: float = Field(default=30.0, ge=0)

    @property
    def diffusers_model_id(self) -> str | None:
        """The name this worker's diffusers model is advertised under."""
        if self.diffusers_model is None:
            return None
        return self.diffusers_model_name or self.diffusers_model.resolve().name

    @model_validator(mode="after")
    def _grpc_needs_an_address(self) -> WorkerSettings:
        if self.transport != "grpc":
            return self
        if not self.api_address:
            raise InvalidInput(
                "--transport grpc needs the API's gRPC address: --api HOST:PORT "
                "(or EMP_API_ADDRESS)",
                field="api_address",
            )
        if self.api_token is None or not self.api_token.get_secret_value().strip():
            raise InvalidInput(
                "--transport grpc needs an admin API token in EMP_API_TOKEN (or the config file)",
                field="api_token",
            )
        return self

    @model_validator(mode="after")
    def _grpc_names_no_queue(self) -> WorkerSettings:
        # The API serves a gRPC worker from the queues its services are routed to (its own
        # EMP_QUEUE_ROUTES): a queue named here would be ignored, so it is refused instead.
        if self.transport == "grpc" and self.queues:
            raise InvalidInput(
                "--transport grpc takes no --queue (EMP_QUEUES): the API serves a gRPC worker "
                "from the queues its services are routed to (the API's EMP_QUEUE_ROUTES); "
                "--queue is for --transport redis",
                field="queues",
            )
        return self

    @property
    def queue_names_served(self) -> list[str]:
        """The queues this worker claims from, in its first claim's order."""
        return list(dict.fromkeys(self.queues)) or [self.queue]

    @field_validator("services", "allowed_customers", "denied_customers", "queues", mode="before")
    @classmethod
    def _comma_lists(cls, value: Any) -> Any:
        return _split(value)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Highest first: flags (passed as init arguments), environment, .env, the config file.
        return (init_settings, env_settings, dotenv_settings, _ConfigFileSource(settings_cls))

    @property
    def lora_cache_path(self) -> Path:
        """This worker's LoRA cache folder."""
        root = self.lora_cache_dir
        if root is None:
            xdg = os.environ.get("XDG_CACHE_HOME")
            root = (Path(xdg) if xdg else Path.home() / ".cache") / "emp" / "loras"
        return root / self.worker_id

    @property
    def registry_ttl_seconds(self) -> float:
        """A worker whose refreshes stop drops out of the registry after three missed ones."""
        return 3 * self.registry_refresh_seconds

    def to_capabilities(self) -> WorkerCapabilities:
        """What this worker advertises with every claim."""
        return WorkerCapabilities(
            worker_id=self.worker_id,
            machine_id=self.machine_id,
            services=self.services,
            hardware=Hardware(
                gpu_memory_gb=self.gpu_memory_gb, cpu_cores=self.cpu_cores, ram_gb=self.ram_gb
            ),
            models=self._advertised_models(),
            customer_isolation=self.customer_isolation,
            allowed_customers=self.allowed_customers,
            denied_customers=self.denied_customers,
            workflow_id=self.workflow_id,
            capabilities=self.capabilities,
        )

    def _advertised_models(self) -> dict[str, list[str]]:
        """The configured models, plus the diffusers model folder's name under ``diffusers``."""
        models = {service: list(names) for service, names in self.models.items()}
        name = self.diffusers_model_id
        if name is not None and "diffusers" in self.services:
            held = models.setdefault("diffusers", [])
            if name not in held:
                held.append(name)
        return models
