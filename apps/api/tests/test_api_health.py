"""/health names a dependency that stopped answering; /version needs no token."""

from __future__ import annotations

from pathlib import Path

import pytest
from api_helpers import postgres_database, running_api

from emp_api.app import create_app
from emp_core.redis.server import RedisServer
from emp_core.settings import QueueSettings
from emp_sql import DatabaseSettings
from emp_web.settings import WebSettings


async def test_health_reports_a_stopped_redis(tmp_path: Path, database_url: str) -> None:
    server = RedisServer(tmp_path / "redis").start()
    try:
        settings = QueueSettings(redis_url=server.url, queue="health")
        async with running_api(settings, database_url) as api:
            healthy = await api.http.get("/health")
            assert healthy.status_code == 200
            assert healthy.json() == {"status": "ok", "checks": {"redis": "ok", "sql": "ok"}}

            server.kill()
            sick = await api.http.get("/health")
            assert sick.status_code == 503
            body = sick.json()
            assert body["error"]["code"] == "unavailable"
            assert body["error"]["field"] == "redis"
            assert "redis is unavailable" in body["error"]["message"]
            assert body["checks"]["sql"] == "ok"
            assert body["checks"]["redis"] != "ok"

            version = (await api.http.get("/version")).json()
            assert set(version) == {"api", "core", "library"}
    finally:
        server.stop()


async def test_health_reports_a_missing_database(
    settings: QueueSettings, database_url: str
) -> None:
    gone = database_url.rsplit("/", 1)[0] + "/emp_no_such_database"
    async with running_api(settings, gone, run_projector=False) as api:
        sick = await api.http.get("/health")
    assert sick.status_code == 503
    assert sick.json()["error"]["field"] == "sql"


async def test_refuses_to_start_on_an_unmigrated_database(settings: QueueSettings) -> None:
    with postgres_database() as url:
        app = create_app(WebSettings(queue=settings, database=DatabaseSettings(database_url=url)))
        with pytest.raises(RuntimeError, match="run `emp db upgrade`"):
            async with app.router.lifespan_context(app):
                pass
