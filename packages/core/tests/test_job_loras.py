"""The LoRAs a job names (ADR-010): validated at submit, stored with the job, read back whole,
and kept out of the requirement class."""

from __future__ import annotations

from typing import Any

import pytest
from core_factories import claim_one, make_caps, make_spec

from emp_core.errors import InvalidInput
from emp_core.jobs.job import JobSpec
from emp_core.jobs.loras import LoraRef
from emp_core.queue.queue import Queue


def lora(n: int = 1, **kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": f"lora-{n}",
        "name": f"style-{n}.safetensors",
        "sha256": f"{n:064x}",
        "size": 1000 + n,
        "scope": "user",
        "url": f"http://blobs.example/{n}?sig=abc",
        "weight": 0.8,
    }
    return base | kw


async def test_loras_round_trip_through_the_job(queue: Queue) -> None:
    refs = [lora(1), lora(2, scope="shared", weight=-1.5)]
    job_id = await queue.submit(make_spec(loras=refs))
    job = await queue.get(job_id)
    assert job.loras == [LoraRef.model_validate(r) for r in refs]
    claimed = await claim_one(queue, make_caps())
    assert claimed.job.loras == job.loras


async def test_a_job_without_loras_reads_back_empty(queue: Queue) -> None:
    job_id = await queue.submit(make_spec())
    assert (await queue.get(job_id)).loras == []


def test_loras_stay_out_of_the_requirement_class() -> None:
    plain = make_spec().requirement_class
    assert make_spec(loras=[lora(1)]).requirement_class == plain
    assert make_spec(loras=[lora(2), lora(3)]).requirement_class == plain


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"sha256": "AB" * 32}, "loras"),
        ({"sha256": "ab" * 31}, "loras"),
        ({"size": 0}, "loras"),
        ({"scope": "public"}, "loras"),
        ({"weight": 4.5}, "loras"),
        ({"name": "../x.safetensors"}, "loras"),
        ({"url": ""}, "loras"),
    ],
)
def test_bad_lora_refs_are_refused_naming_the_field(bad: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        JobSpec.parse(
            make_spec().model_dump() | {"loras": [lora(1, **bad)]}, max_payload_bytes=10_000
        )
    assert str(info.value.field).startswith(field)


def test_at_most_eight_loras_and_no_file_twice() -> None:
    data = make_spec().model_dump()
    with pytest.raises(InvalidInput, match="loras"):
        JobSpec.parse(data | {"loras": [lora(i) for i in range(9)]}, max_payload_bytes=10_000)
    with pytest.raises(InvalidInput, match="named twice"):
        JobSpec.parse(data | {"loras": [lora(1), lora(1, id="other")]}, max_payload_bytes=10_000)
