"""Form input that JSON cannot hold is put back next to its field, never a 500 or a reset
connection; a body that dribbles in is refused (issue 12, defects 3 and 8)."""

from __future__ import annotations

import asyncio
import re

import pytest
from studio_helpers import Visitor, job_form, running_studio

from emp_core.jobs.jsonvalue import MAX_DEPTH
from emp_core.queue import Queue
from emp_core.settings import QueueSettings


@pytest.mark.parametrize(
    ("fields", "field", "text"),
    [
        ({"payload": '{"prompt": "\\ud800"}'}, "payload", "lone surrogate"),
        ({"payload": '{"x": NaN}'}, "payload", "not a number json can hold"),
        ({"payload": '{"x": Infinity}'}, "payload", "not a number json can hold"),
        ({"payload": '{"x": 123456789012345678901234567890}'}, "payload", "64 bits"),
        ({"payload": '{"d": ' + "[" * 10_000 + "]" * 10_000 + "}"}, "payload", "deeper"),
        ({"payload": '{"d": ' + "[" * MAX_DEPTH + "]" * MAX_DEPTH + "}"}, "payload", "deeper"),
        ({"need_cap_path": "x", "need_cap_value": "[" * 5000 + "]" * 5000}, "need_caps", "deeper"),
        ({"need_cap_path": "x", "need_cap_value": "NaN"}, "need_caps", "json can hold"),
    ],
)
async def test_unstorable_form_input_stands_next_to_its_field(
    alice: Visitor, queue: Queue, fields: dict[str, str], field: str, text: str
) -> None:
    await alice.get("/jobs/new")
    response = await alice.post("/jobs", job_form(**fields))
    assert response.status_code == 422, response.text[:500]
    error = re.search(rf'data-testid="error-{field}">([^<]*)<', response.text)
    assert error, f"no error next to {field}"
    assert text in error.group(1).lower()
    assert await queue.depth() == {}


async def test_a_body_that_dribbles_in_is_refused_with_408(
    settings: QueueSettings, database_url: str
) -> None:
    async with running_studio(settings, database_url, body_timeout_seconds=0.3) as studio:
        address, port = studio.host.split(":")
        reader, writer = await asyncio.open_connection(address, int(port))
        writer.write(
            b"POST /signin HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded"
            b"\r\nContent-Length: 100\r\n\r\nemail=a"
        )
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 408"), answer[:80]
