"""Helpers of the API's tests: PostgreSQL databases, accounts, a served app, a fake worker."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy.engine import make_url

from emp_api.app import create_app
from emp_api.settings import ApiSettings
from emp_core.blobs.local import LocalBlobStore
from emp_core.blobs.settings import BlobSettings
from emp_core.settings import QueueSettings
from emp_web.settings import WebSettings
from emp_web.testing import (
    ServedApp,
    serve,
    web_settings_for,
)
from emp_web.webhooks.settings import WebhookSettings

# EMP_TEST_POSTGRES_URL, else the URL scripts/ensure-postgres.sh wrote for the cluster it runs (its
# port need not be 5432), else the usual local server.
_URL_FILE = Path(__file__).resolve().parents[3] / ".data" / "test-postgres-url"
POSTGRES_URL = os.environ.get("EMP_TEST_POSTGRES_URL") or (
    _URL_FILE.read_text().strip()
    if _URL_FILE.is_file()
    else "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@contextmanager
def postgres_database() -> Iterator[str]:
    """A new, empty database on the test server (its async URL); dropped afterwards."""
    name = f"emp_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(_libpq(POSTGRES_URL), autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {POSTGRES_URL} ({exc}); "
            "run scripts/ensure-postgres.sh or set EMP_TEST_POSTGRES_URL",
            pytrace=False,
        )
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Api(ServedApp):
    """A running API with an HTTP client."""

    http: httpx.AsyncClient = None  # type: ignore[assignment]  # set by running_api


def create_app_for(web: WebSettings, **api_options: Any) -> Any:
    options = {"auth_cache_seconds": 0.0, "archive_catch_up_seconds": 0.5, **api_options}
    return create_app(web, ApiSettings(**options))


@asynccontextmanager
async def running_api(
    settings: QueueSettings,
    database_url: str,
    *,
    blob_settings: BlobSettings | None = None,
    webhooks: WebhookSettings | None = None,
    **api_options: Any,
) -> AsyncIterator[Api]:
    """The API served on a free port. Blobs go to a local store in a temporary folder unless
    ``blob_settings`` says otherwise; its signed URLs point at this server."""
    with web_settings_for(settings, database_url, webhooks=webhooks, blobs=blob_settings) as web:
        app = create_app_for(web, **api_options)
        async with serve(app) as host, httpx.AsyncClient(base_url=f"http://{host}") as http:
            store = app.state.services.backends.blobs
            if isinstance(store, LocalBlobStore):
                store.public_url = f"http://{host}/blobs"
            yield Api(app, host, http)


def job_body(**overrides: Any) -> dict[str, Any]:
    return {"service": "simulation", "payload": {"steps": 3}, **overrides}
