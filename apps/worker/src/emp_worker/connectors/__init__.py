"""Connectors by name. A worker runs one connector per service it advertises, found here by the
service's name; ``register_connector`` adds one (a plug-in, or a test's)."""

from __future__ import annotations

from collections.abc import Callable

from emp_core.errors import InvalidInput
from emp_worker.config import WorkerSettings
from emp_worker.connectors.base import Abort, Connector, JobContext, RecordingContext, Retry
from emp_worker.connectors.noop import NoopConnector
from emp_worker.connectors.simulation import SimulationConnector

__all__ = [
    "Abort",
    "Connector",
    "ConnectorFactory",
    "JobContext",
    "NoopConnector",
    "RecordingContext",
    "Retry",
    "SimulationConnector",
    "available_connectors",
    "build_connectors",
    "register_connector",
]

ConnectorFactory = Callable[[WorkerSettings], Connector]


def _simulation(settings: WorkerSettings) -> Connector:
    return SimulationConnector(
        steps=settings.simulation_steps, step_time=settings.simulation_step_time
    )


def _noop(settings: WorkerSettings) -> Connector:
    return NoopConnector()


def _diffusers(settings: WorkerSettings) -> Connector:
    # Imported here: torch and diffusers load only in a worker that serves diffusers.
    from emp_worker.connectors.diffusers import connector_from_settings

    return connector_from_settings(settings)


def _comfyui(settings: WorkerSettings) -> Connector:
    from emp_worker.connectors.comfyui import connector_from_settings

    return connector_from_settings(settings)


_FACTORIES: dict[str, ConnectorFactory] = {
    "simulation": _simulation,
    "noop": _noop,
    "diffusers": _diffusers,
    "comfyui": _comfyui,
}


def register_connector(name: str, factory: ConnectorFactory) -> None:
    """Make ``name`` a service workers can run, with ``factory`` building its connector."""
    _FACTORIES[name] = factory


def available_connectors() -> list[str]:
    return sorted(_FACTORIES)


def build_connectors(settings: WorkerSettings) -> dict[str, Connector]:
    """One connector per service of the worker; a service without one is refused by name."""
    out: dict[str, Connector] = {}
    for service in settings.services:
        factory = _FACTORIES.get(service)
        if factory is None:
            raise InvalidInput(
                f"no connector serves {service!r}; available: {', '.join(available_connectors())}",
                field="services",
            )
        out[service] = factory(settings)
    return out
