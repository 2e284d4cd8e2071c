"""``/api/error-patterns``: admins only; bad input names the field and saves nothing; a stale
version gets 409; a save reaches the Redis snapshot; counts fold into SQL exactly once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from api_helpers import Api

from emp_core.patterns import Category, Classification
from emp_core.patterns.counts import record
from emp_core.patterns.store import read_snapshot
from emp_core.queue.queue import Queue
from emp_sql import Database, DatabaseSettings
from emp_sql.patterns_admin import PatternAdmin
from emp_web.testing import Account

URL = "/api/error-patterns"


def pattern_body(**overrides: Any) -> dict[str, Any]:
    return {
        "name": "oom", "match_kind": "substring", "pattern": "CUDA out of memory",
        "category": "out_of_memory", "retryable": True, "retry_delay_s": 5,
        "user_message": "The GPU ran out of memory.", "connector": "comfyui", **overrides,
    }  # fmt: skip


async def test_non_admins_get_403_everywhere(api: Api, accounts: dict[str, Account]) -> None:
    alice = accounts["alice"].headers
    for method, path in (
        ("GET", URL), ("POST", URL), ("POST", f"{URL}/test"), ("GET", f"{URL}/stats"),
        ("PUT", f"{URL}/x"), ("DELETE", f"{URL}/x"), ("GET", f"{URL}/x/history"),
    ):  # fmt: skip
        response = await api.http.request(method, path, headers=alice, json=pattern_body())
        assert response.status_code == 403, (method, path, response.text)
    assert (await api.http.get(URL)).status_code == 401


async def test_crud_publishes_and_stale_version_is_409(
    api: Api, accounts: dict[str, Account], queue: Queue
) -> None:
    admin = accounts["admin"].headers
    created = await api.http.post(URL, json=pattern_body(), headers=admin)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["version"] == 1
    assert body["updated_by"] == accounts["admin"].email
    snapshot = await read_snapshot(queue.redis, queue.keys)
    assert snapshot is not None
    assert [r.id for r in snapshot.rules] == [body["id"]]

    first = await api.http.put(
        f"{URL}/{body['id']}", json=pattern_body(priority=5, version=1), headers=admin
    )
    assert first.status_code == 200
    assert first.json()["version"] == 2
    stale = await api.http.put(
        f"{URL}/{body['id']}", json=pattern_body(priority=9, version=1), headers=admin
    )
    assert stale.status_code == 409
    assert stale.json()["error"]["field"] == "version"
    got = (await api.http.get(f"{URL}/{body['id']}", headers=admin)).json()
    assert (got["priority"], got["version"]) == (5, 2)

    history = (await api.http.get(f"{URL}/{body['id']}/history", headers=admin)).json()
    assert [h["action"] for h in history] == ["updated", "created"]
    assert history[0]["before"]["priority"] == 0
    assert history[0]["after"]["priority"] == 5

    listed = await api.http.get(URL, params={"connector": "comfyui"}, headers=admin)
    assert [p["id"] for p in listed.json()] == [body["id"]]
    assert (
        await api.http.delete(f"{URL}/{body['id']}?version=1", headers=admin)
    ).status_code == 409
    assert (
        await api.http.delete(f"{URL}/{body['id']}?version=2", headers=admin)
    ).status_code == 204
    snapshot = await read_snapshot(queue.redis, queue.keys)
    assert snapshot is not None
    assert snapshot.rules == ()


async def test_bad_input_is_422_naming_the_field_and_saves_nothing(
    api: Api, accounts: dict[str, Account]
) -> None:
    admin = accounts["admin"].headers
    before = len((await api.http.get(URL, headers=admin)).json())
    for overrides, field in (
        ({"match_kind": "regex", "pattern": "(a+)+$"}, "pattern"),
        ({"match_kind": "regex", "pattern": "([unclosed"}, "pattern"),
        ({"pattern": ""}, "pattern"),
        ({"connector": "nope"}, "connector"),
        ({"category": "weather"}, "category"),
    ):
        response = await api.http.post(URL, json=pattern_body(**overrides), headers=admin)
        assert response.status_code == 422, (overrides, response.text)
        assert response.json()["error"]["field"] == field
    assert len((await api.http.get(URL, headers=admin)).json()) == before


async def test_test_endpoint_classifies_with_saved_and_candidate_patterns(
    api: Api, accounts: dict[str, Account]
) -> None:
    admin = accounts["admin"].headers
    await api.http.post(URL, json=pattern_body(name="test-oom"), headers=admin)
    message = "RuntimeError: CUDA out of memory. Tried to allocate 2 GiB"
    saved = await api.http.post(
        f"{URL}/test", json={"message": message, "connector": "comfyui"}, headers=admin
    )
    assert saved.status_code == 200
    assert saved.json()["category"] == "out_of_memory"
    candidate = pattern_body(
        name="cand", pattern="Tried to allocate", category="invalid_input", retryable=False,
        priority=100,
    )  # fmt: skip
    tried = await api.http.post(
        f"{URL}/test", json={"message": message, "connector": "comfyui", "candidate": candidate},
        headers=admin,
    )  # fmt: skip
    assert tried.json()["by_candidate"] is True
    assert tried.json()["retryable"] is False


async def test_counts_fold_exactly_once_under_concurrent_folders(
    api: Api, accounts: dict[str, Account], queue: Queue, database_url: str
) -> None:
    """Four folders (as four API processes would), besides the API's own, fold while workers
    keep counting: SQL ends with every count exactly once."""
    admin = accounts["admin"].headers
    created = (await api.http.post(URL, json=pattern_body(name="fold"), headers=admin)).json()
    hit = Classification(Category.OUT_OF_MEMORY, True, "x", pattern_id=created["id"])
    databases = [Database(DatabaseSettings(database_url=database_url)) for _ in range(4)]
    folders = [PatternAdmin(db, queue.redis, queue.keys) for db in databases]
    total_recorded = 0

    async def count(n: int) -> None:
        nonlocal total_recorded
        for _ in range(n):
            await record(queue.redis, queue.keys, hit, "CUDA out of memory", "comfyui")
            total_recorded += 1
            await asyncio.sleep(0)

    async def fold_rounds(folder: PatternAdmin) -> int:
        folded = 0
        for _ in range(10):
            folded += await folder.fold_counts()
            await asyncio.sleep(0.005)
        return folded

    try:
        results = await asyncio.gather(count(300), *(fold_rounds(f) for f in folders))
        folded = sum(results[1:]) + sum([await f.fold_counts() for f in folders])
    finally:
        for db in databases:
            await db.dispose()
    # The API's own background fold may take some rounds too; SQL must hold each count once.
    assert total_recorded == 300
    assert 0 < folded <= 300
    stats = (await api.http.get(f"{URL}/stats", headers=admin)).json()
    mine = next(p for p in stats["patterns"] if p["pattern_id"] == created["id"])
    assert mine["total"] == 300
    assert mine["days"] == [{"day": datetime.now(UTC).date().isoformat(), "matches": 300}]
