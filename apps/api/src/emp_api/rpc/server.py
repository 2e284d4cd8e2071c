"""The gRPC server, run beside the HTTP app in the same process (``emp-api --grpc-port``).

Why in the same process rather than an entry point of its own: it is another adapter over the
same services, so it shares the process's Redis pool, token cache, SQL engine and background
tasks instead of opening a second set, and one deployment serves both. grpcio binds with
SO_REUSEPORT, so with several API processes each serves the same port and the kernel spreads the
connections. It carries the standard health service (``grpc.health.v1``, SERVING while the
process runs, NOT_SERVING while it stops) and server reflection (grpcurl needs no .proto files),
TLS when a certificate and key are configured, the message size limit of the HTTP body limit,
and a graceful stop: new calls are refused, calls in flight get ``grace`` seconds.
"""

from __future__ import annotations

import logging
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from emp.v1 import job_pb2, job_pb2_grpc, machine_pb2, machine_pb2_grpc, worker_pb2, worker_pb2_grpc
from emp_api.rpc.jobs import JobService
from emp_api.rpc.machines import MachineService
from emp_api.rpc.workers import WorkerService
from emp_api.settings import ApiSettings
from emp_api.state import Services

logger = logging.getLogger(__name__)

SERVICE_NAMES = (
    job_pb2.DESCRIPTOR.services_by_name["JobService"].full_name,
    worker_pb2.DESCRIPTOR.services_by_name["WorkerService"].full_name,
    machine_pb2.DESCRIPTOR.services_by_name["MachineService"].full_name,
)


class RpcServer:
    def __init__(self, services: Services, settings: ApiSettings) -> None:
        self.settings = settings
        limit = settings.grpc_max_message_bytes
        self.server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
                ("grpc.so_reuseport", 1),
            ]
        )
        job_pb2_grpc.add_JobServiceServicer_to_server(JobService(services), self.server)
        self.workers = WorkerService(services)
        worker_pb2_grpc.add_WorkerServiceServicer_to_server(self.workers, self.server)
        machine_pb2_grpc.add_MachineServiceServicer_to_server(MachineService(services), self.server)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server
        )
        self.port = 0

    def _credentials(self) -> grpc.ServerCredentials | None:
        s = self.settings
        if s.grpc_tls_cert is None or s.grpc_tls_key is None:
            return None
        pair = (Path(s.grpc_tls_key).read_bytes(), Path(s.grpc_tls_cert).read_bytes())
        return grpc.ssl_server_credentials([pair])

    async def start(self) -> int:
        """Bind and serve; returns the port (the one chosen when ``grpc_port`` is 0)."""
        s = self.settings
        address = f"{s.grpc_host}:{s.grpc_port}"
        credentials = self._credentials()
        if credentials is None:
            self.port = self.server.add_insecure_port(address)
        else:
            self.port = self.server.add_secure_port(address, credentials)
        await self.server.start()
        for name in ("", *SERVICE_NAMES):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        tls = "TLS" if credentials is not None else "plaintext"
        logger.info("gRPC serving on %s:%d (%s)", s.grpc_host, self.port, tls)
        return self.port

    async def stop(self) -> None:
        await self.health.enter_graceful_shutdown()
        await self.server.stop(self.settings.grpc_grace_seconds)
        await self.workers.close()
