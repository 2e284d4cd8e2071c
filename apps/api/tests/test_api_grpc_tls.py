"""The gRPC server with TLS configured: a client trusting the certificate is served; a plaintext
client is not."""

from __future__ import annotations

import datetime
from pathlib import Path

import grpc
import pytest
from api_helpers import running_api
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from emp.v1 import job_pb2, job_pb2_grpc
from emp_core.settings import QueueSettings
from emp_rpc.metadata import bearer
from emp_web.testing import Account


def self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_tls(
    settings: QueueSettings, database_url: str, accounts: dict[str, Account], tmp_path: Path
) -> None:
    cert, key = self_signed(tmp_path)
    options = {"grpc_port": 0, "grpc_tls_cert": str(cert), "grpc_tls_key": str(key)}
    async with running_api(settings, database_url, **options) as api:
        target = f"127.0.0.1:{api.app.state.grpc_port}"
        credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        override = (("grpc.ssl_target_name_override", "localhost"),)
        async with grpc.aio.secure_channel(target, credentials, options=override) as channel:
            jobs = job_pb2_grpc.JobServiceStub(channel)
            listed = await jobs.ListJobs(
                job_pb2.ListJobsRequest(), metadata=bearer(accounts["alice"].token)
            )
            assert list(listed.jobs) == []
        async with grpc.aio.insecure_channel(target) as plain:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await job_pb2_grpc.JobServiceStub(plain).ListJobs(
                    job_pb2.ListJobsRequest(), metadata=bearer(accounts["alice"].token),
                    timeout=5,
                )  # fmt: skip
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
