"""The worker's transports (see ``base.py``): ``open_transport`` picks one from the settings.

The gRPC one is imported only when asked for, so a worker on the Redis transport neither needs
nor loads grpcio (it comes with the ``emp-worker[grpc]`` extra).
"""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from emp_core.errors import EmpError
from emp_worker.config import WorkerSettings
from emp_worker.transport.base import Transport, TransportError


def open_transport(
    settings: WorkerSettings, *, redis: Redis | None = None, stopping: asyncio.Event
) -> Transport:
    """The transport ``settings.transport`` names (``redis``, ``grpc``), not yet connected."""
    if settings.transport == "grpc":
        try:
            from emp_worker.transport.grpc import GrpcTransport
        except ImportError as exc:  # the extra is not installed
            raise EmpError(
                f"--transport grpc needs the grpc extra (pip install 'emp-worker[grpc]'): {exc}"
            ) from None
        return GrpcTransport(settings)
    from emp_worker.transport.redis import RedisTransport

    return RedisTransport(settings, redis=redis, stopping=stopping)


__all__ = ["Transport", "TransportError", "open_transport"]
