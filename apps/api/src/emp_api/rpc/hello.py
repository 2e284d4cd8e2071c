"""What a gRPC worker tells the server about itself, checked: its ``Hello`` (capabilities) and
its ``Loras`` advertisement. Bad input is ``InvalidInput`` (INVALID_ARGUMENT), never a crash."""

from __future__ import annotations

import re

import orjson
from pydantic import ValidationError

from emp.v1 import worker_pb2
from emp_core.errors import InvalidInput, invalid_from_validation
from emp_core.jobs.capabilities import WorkerCapabilities
from emp_core.loras.cache import ADVERTISE_LIMIT

_SHA256 = re.compile(r"[0-9a-f]{64}")


def lora_hashes(message: worker_pb2.Loras) -> list[str]:
    """The hashes of a ``Loras`` message, checked (at most ``ADVERTISE_LIMIT``, each a
    lowercase hex SHA-256), duplicates dropped, order kept (most recently used first)."""
    hashes = list(message.sha256)
    if len(hashes) > ADVERTISE_LIMIT:
        raise InvalidInput(
            f"loras holds {len(hashes)} hashes; a worker advertises at most {ADVERTISE_LIMIT}",
            field="loras.sha256",
        )
    for index, sha in enumerate(hashes):
        if not _SHA256.fullmatch(sha):
            raise InvalidInput(
                f"loras.sha256[{index}] must be a SHA-256 as 64 lowercase hex characters, "
                f"got {sha[:80]!r}",
                field="loras.sha256",
            )
    return list(dict.fromkeys(hashes))


def capabilities(hello: worker_pb2.Hello) -> WorkerCapabilities:
    """The worker's capabilities from its ``Hello`` (services, and capabilities_json's rest)."""
    try:
        extra = orjson.loads(hello.capabilities_json) if hello.capabilities_json else {}
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(
            f"capabilities_json is not JSON: {exc}", field="capabilities_json"
        ) from None
    if not isinstance(extra, dict):
        raise InvalidInput("capabilities_json must be a JSON object", field="capabilities_json")
    try:
        return WorkerCapabilities.model_validate(
            {**extra, "worker_id": hello.worker_id, "services": list(hello.services)}
        )
    except ValidationError as exc:
        raise invalid_from_validation(exc, root="hello") from None
