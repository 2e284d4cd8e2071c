"""Input that JSON cannot hold, or that arrives too slowly, is refused with the right status and
the field it concerns; never a 500, never a request held open for ever (issue 12, defects 3, 8)."""

from __future__ import annotations

import asyncio

import pytest
from api_helpers import Api, create_app_for, running_api

from emp_core.jobs.jsonvalue import MAX_DEPTH
from emp_core.queue import Queue
from emp_core.settings import QueueSettings
from emp_web.testing import Account, serve, web_settings_for

DEEP = "[" * 10_000 + "]" * 10_000


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ('{"prompt": "\\ud800"}', "payload.prompt"),  # a lone surrogate
        ('{"a": {"\\udfff": 1}}', "payload.a"),  # ... in a key
        ('{"x": NaN}', "payload.x"),
        ('{"x": [1, Infinity]}', "payload.x[1]"),
        ('{"x": -Infinity}', "payload.x"),
        ('{"x": 1e400}', "payload.x"),  # a float JSON parses as infinity
        ('{"x": 123456789012345678901234567890}', "payload.x"),  # beyond 64 bits
        (f'{{"deep": {DEEP}}}', "payload"),  # 10,000 deep: refused before parsing
        ('{"d": ' + "[" * (MAX_DEPTH + 5) + "]" * (MAX_DEPTH + 5) + "}", "payload"),
    ],
)
async def test_unstorable_payloads_are_422_naming_the_field(
    api: Api, accounts: dict[str, Account], queue: Queue, payload: str, field: str
) -> None:
    body = '{"service": "simulation", "payload": ' + payload + "}"
    headers = accounts["alice"].headers | {"Content-Type": "application/json"}
    response = await api.http.post("/api/jobs", content=body.encode(), headers=headers)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_input"
    assert error["field"].startswith(field), error
    assert await queue.depth() == {}


async def test_unstorable_capabilities_are_422(api: Api, accounts: dict[str, Account]) -> None:
    body = b'{"service": "simulation", "requirements": {"capabilities": {"gpu.x": NaN}}}'
    headers = accounts["alice"].headers | {"Content-Type": "application/json"}
    response = await api.http.post("/api/jobs", content=body, headers=headers)
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "requirements.capabilities.gpu.x"


async def test_a_payload_at_the_depth_limit_is_accepted(
    api: Api, accounts: dict[str, Account]
) -> None:
    nested = "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1)  # the payload object is level 1
    body = '{"service": "simulation", "payload": {"d": ' + nested + "}}"
    headers = accounts["alice"].headers | {"Content-Type": "application/json"}
    response = await api.http.post("/api/jobs", content=body.encode(), headers=headers)
    assert response.status_code == 201, response.text


async def _raw(host: str, data: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    address, port = host.split(":")
    reader, writer = await asyncio.open_connection(address, int(port))
    writer.write(data)
    await writer.drain()
    return reader, writer


async def test_a_body_that_dribbles_in_is_refused_with_408(
    settings: QueueSettings, database_url: str, accounts: dict[str, Account]
) -> None:
    async with running_api(settings, database_url, body_timeout_seconds=0.3) as api:
        head = (
            "POST /api/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {accounts['alice'].token}\r\nContent-Length: 100\r\n\r\n"
        )
        reader, writer = await _raw(api.host, head.encode() + b'{"serv')
        answer = await asyncio.wait_for(reader.read(), 10)  # the server ends it, not the client
        writer.close()
        assert answer.startswith(b"HTTP/1.1 408"), answer[:80]
        assert b'"field":"body"' in answer


async def test_a_head_that_dribbles_in_is_cut_off(
    settings: QueueSettings, database_url: str
) -> None:
    with web_settings_for(settings, database_url) as web:
        async with serve(create_app_for(web), head_timeout=0.3) as host:
            reader, writer = await _raw(host, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            answer = await asyncio.wait_for(reader.read(), 10)  # closed by the server
            writer.close()
            assert answer == b""
            # A prompt client on the same server is served as usual.
            reader, writer = await _raw(host, b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await reader.readline()).startswith(b"HTTP/1.1 200")
            writer.close()
