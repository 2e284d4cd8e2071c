"""Schemathesis against the app's OpenAPI schema: no generated request gets a 5xx.

The app runs in uvicorn on a thread of its own (schemathesis's calls are synchronous); each
operation gets a bounded number of examples, sent as an admin, as a user or with no token.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr
from schemathesis.generation.modes import GenerationMode

from emp_api.app import create_app
from emp_api.settings import ApiSettings
from emp_core.blobs.settings import BlobSettings
from emp_core.redis.server import free_port
from emp_core.settings import QueueSettings
from emp_sql import DatabaseSettings
from emp_web.settings import WebSettings
from emp_web.testing import Account

EXAMPLES = 40


@pytest.fixture
def base_url(settings: QueueSettings, database_url: str, tmp_path: Path) -> Iterator[str]:
    web = WebSettings(
        queue=settings,
        database=DatabaseSettings(database_url=database_url),
        blobs=BlobSettings(url=f"file://{tmp_path}", signing_key=SecretStr("k")),
    )
    # No limit on bad tokens: a third of the calls carry none, and once the address is limited
    # every later operation would only see 429 (this test is about 5xx).
    app = create_app(web, ApiSettings(max_body_bytes=200_000, token_failure_limits=""))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert thread.is_alive(), "the API stopped during start-up"
        assert time.monotonic() < deadline, "the API did not start in time"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(15)


def test_no_request_gets_a_server_error(base_url: str, accounts: dict[str, Account]) -> None:
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    callers = st.sampled_from([accounts["admin"].headers, accounts["alice"].headers, {}])
    seen: dict[int, int] = {}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 8

    for operation in operations:
        # Positive cases exercise the routes; negative ones (schema-invalid on purpose) are
        # where unhandled errors hide.
        cases = st.one_of(
            operation.as_strategy(GenerationMode.POSITIVE),
            operation.as_strategy(GenerationMode.NEGATIVE),
        )

        @given(case=cases, headers=callers)
        @settings(
            max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
            phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck),
        )  # fmt: skip
        def check(case: schemathesis.Case, headers: dict[str, str]) -> None:
            response = case.call(headers=headers, timeout=10)
            seen[response.status_code] = seen.get(response.status_code, 0) + 1
            assert response.status_code < 500, (
                f"{case.method} {case.formatted_path} -> {response.status_code}: "
                f"{response.text[:500]}"
            )

        check()
    print(f"schemathesis status codes: {dict(sorted(seen.items()))}")
    assert {200, 201, 401, 422} <= set(seen)
