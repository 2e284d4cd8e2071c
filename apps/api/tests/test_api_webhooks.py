"""Webhooks end to end against a real local HTTP receiver: register over the API, finish a job,
receive a delivery whose signature the standardwebhooks library verifies; retries, a killed
dispatcher, the SSRF guard and who may see what."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest
from api_helpers import Api, job_body, running_api
from standardwebhooks import Webhook
from webhook_helpers import Receiver, eventually, local_settings, receiving

from emp_core.settings import QueueSettings
from emp_sql import Database, DatabaseSettings
from emp_web.testing import Account, claim
from emp_web.webhooks.dispatcher import WebhookDispatcher

ENDS = ["job.completed", "job.failed", "job.cancelled"]


@pytest.fixture
async def hooked(settings: QueueSettings, database_url: str) -> AsyncIterator[Api]:
    """The API with its dispatcher on, allowed to deliver to 127.0.0.1 over http."""
    async with running_api(settings, database_url, webhooks=local_settings()) as running:
        yield running


async def register(api: Api, who: Account, url: str, events: list[str] = ENDS) -> dict[str, Any]:
    r = await api.http.post(
        "/api/webhooks", json={"url": url, "events": events}, headers=who.headers
    )
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


async def finish_job(api: Api, who: Account, result: Any = None) -> str:
    r = await api.http.post("/api/jobs", json=job_body(), headers=who.headers)
    assert r.status_code == 201, r.text
    claimed = await claim(api.services.queue)
    await api.services.queue.complete(claimed, result)
    return claimed.id


async def deliveries(api: Api, who: Account, endpoint_id: str) -> list[dict[str, Any]]:
    r = await api.http.get(f"/api/webhooks/{endpoint_id}/deliveries", headers=who.headers)
    assert r.status_code == 200, r.text
    rows: list[dict[str, Any]] = r.json()["deliveries"]
    return rows


async def settled(api: Api, who: Account, endpoint_id: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        rows = await deliveries(api, who, endpoint_id)
        return rows[0] if rows and rows[0]["status"] != "pending" else None

    return await eventually(check)


async def test_a_finished_job_is_delivered_signed(
    hooked: Api, accounts: dict[str, Account]
) -> None:
    alice = accounts["alice"]
    with receiving(Receiver()) as receiver:
        endpoint = await register(hooked, alice, receiver.url)
        assert endpoint["secret"].startswith("whsec_")
        job_id = await finish_job(hooked, alice, {"images": ["a.png"]})
        delivery = await settled(hooked, alice, endpoint["id"])
    assert (delivery["status"], delivery["attempts"], delivery["last_status_code"]) == (
        "succeeded", 1, 200,
    )  # fmt: skip
    [got] = receiver.received
    payload = Webhook(endpoint["secret"]).verify(got.body, got.headers)
    assert payload["type"] == "job.completed"
    assert payload["data"]["job_id"] == job_id
    assert payload["data"]["result"] == {"images": ["a.png"]}
    assert got.headers["webhook-id"] == delivery["id"]
    # Nothing secret in the body: no token, no secret, no payload, no worker.
    text = got.body.decode()
    for secret in (endpoint["secret"], alice.token, "worker_id", "traceparent", "payload"):
        assert secret not in text
    # The secret is shown once: never in a read.
    r = await hooked.http.get(f"/api/webhooks/{endpoint['id']}", headers=alice.headers)
    assert "secret" not in r.json()


async def test_three_failures_then_one_success(hooked: Api, accounts: dict[str, Account]) -> None:
    alice = accounts["alice"]
    with receiving(Receiver(fail_first=3)) as receiver:
        endpoint = await register(hooked, alice, receiver.url)
        await finish_job(hooked, alice)
        delivery = await settled(hooked, alice, endpoint["id"])
    assert (delivery["status"], delivery["attempts"]) == ("succeeded", 4)
    assert len({r.headers["webhook-id"] for r in receiver.received}) == 1
    assert len(receiver.received) == 4
    r = await hooked.http.get(
        f"/api/webhooks/{endpoint['id']}/deliveries/{delivery['id']}", headers=alice.headers
    )
    history = r.json()["history"]
    assert [(h["attempt"], h["status_code"], h["succeeded"]) for h in history] == [
        (1, 500, False), (2, 500, False), (3, 500, False), (4, 200, True),
    ]  # fmt: skip


async def test_gives_up_after_the_deadline_and_can_redeliver(
    settings: QueueSettings, database_url: str, accounts: dict[str, Account]
) -> None:
    alice = accounts["alice"]
    hooks = local_settings(max_age_seconds=0.3)
    async with running_api(settings, database_url, webhooks=hooks) as api:
        with receiving(Receiver(fail_first=1000)) as receiver:
            endpoint = await register(api, alice, receiver.url)
            await finish_job(api, alice)
            failed = await settled(api, alice, endpoint["id"])
            assert failed["status"] == "failed"
            assert failed["last_status_code"] == 500
            receiver.fail_first = 0
            url = f"/api/webhooks/{endpoint['id']}/deliveries/{failed['id']}/redeliver"
            r = await api.http.post(url, headers=alice.headers)
            assert r.status_code == 202, r.text
            again = await settled(api, alice, endpoint["id"])
    assert (again["id"], again["status"]) == (failed["id"], "succeeded")


async def test_a_killed_dispatcher_loses_nothing(
    settings: QueueSettings, database_url: str, accounts: dict[str, Account]
) -> None:
    """A dispatcher SIGKILLed while its request hangs: the next one sends the same delivery."""
    alice = accounts["alice"]
    hooks = local_settings(run_dispatcher=False)
    async with running_api(settings, database_url, webhooks=hooks) as api:
        with receiving(Receiver(hang_first=1)) as receiver:
            endpoint = await register(api, alice, receiver.url)
            await finish_job(api, alice)
            await eventually(lambda: deliveries(api, alice, endpoint["id"]))
            script = (
                "import asyncio, sys\n"
                "from emp_sql import Database, DatabaseSettings\n"
                "from emp_web.webhooks.dispatcher import WebhookDispatcher\n"
                "from webhook_helpers import local_settings\n"
                "db = Database(DatabaseSettings(database_url=sys.argv[1]))\n"
                "hooks = local_settings(lease_seconds=0.5, timeout_seconds=30)\n"
                "asyncio.run(WebhookDispatcher(db, hooks).run())\n"
            )
            env = {**os.environ, "PYTHONPATH": os.path.dirname(__file__)}
            child = await asyncio.create_subprocess_exec(
                sys.executable, "-c", script, database_url, env=env
            )
            try:
                await eventually(lambda: _count(receiver), tries=2000)
            finally:
                child.send_signal(signal.SIGKILL)
                await child.wait()
            [pending] = await deliveries(api, alice, endpoint["id"])
            assert (pending["status"], pending["attempts"]) == ("pending", 1)
            db = Database(DatabaseSettings(database_url=database_url))
            try:
                dispatcher = WebhookDispatcher(db, local_settings(lease_seconds=0.5))

                async def delivered() -> bool:
                    await dispatcher.run_once()
                    return len(receiver.received) == 2

                await eventually(delivered)
                await dispatcher.sender.aclose()
            finally:
                await db.dispose()
            done = await settled(api, alice, endpoint["id"])
        assert (done["status"], done["attempts"]) == ("succeeded", 2)
        assert (
            receiver.received[0].headers["webhook-id"] == receiver.received[1].headers["webhook-id"]
        )
        r = await api.http.get(
            f"/api/webhooks/{endpoint['id']}/deliveries/{done['id']}", headers=alice.headers
        )
        assert [h["succeeded"] for h in r.json()["history"]] == [True]


async def _count(receiver: Receiver) -> int:
    return len(receiver.received)


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("https://127.0.0.1:9/x", "loopback"),
        ("https://localhost:9/x", "loopback"),
        ("https://[::1]:9/x", "loopback"),
        ("https://10.1.2.3/x", "private"),
        ("https://192.168.0.1/x", "private"),
        ("https://169.254.169.254/latest/meta-data", "metadata"),
        ("https://[::ffff:169.254.169.254]/", "metadata"),
        ("https://169.254.1.1/x", "link-local"),
        ("https://100.64.0.1/x", "not a public"),
        ("https://0.0.0.0/x", "unspecified"),
        ("ftp://example.com/x", "must start with"),
        ("https://user:pw@example.com/x", "user name or password"),
        ("not a url", "must start with"),
    ],
)
async def test_unsafe_urls_are_refused(
    api: Api, accounts: dict[str, Account], url: str, words: str
) -> None:
    r = await api.http.post(
        "/api/webhooks", json={"url": url, "events": ENDS}, headers=accounts["alice"].headers
    )
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["field"] == "url"
    assert words in error["message"]


async def test_metadata_is_refused_even_when_allowed(
    settings: QueueSettings, database_url: str, accounts: dict[str, Account]
) -> None:
    hooks = local_settings(allow_networks="0.0.0.0/0")
    async with running_api(settings, database_url, webhooks=hooks) as api:
        r = await api.http.post(
            "/api/webhooks", json={"url": "http://169.254.169.254/", "events": ENDS},
            headers=accounts["alice"].headers,
        )  # fmt: skip
    assert r.status_code == 422
    assert "metadata" in r.json()["error"]["message"]


async def test_redirects_slow_and_huge_responses(
    settings: QueueSettings, database_url: str, accounts: dict[str, Account]
) -> None:
    """A 302 is a failure (not followed), a slow answer is cut at the timeout, and a huge body is
    read no further than the limit (the attempt still counts by its status)."""
    alice = accounts["alice"]
    hooks = local_settings(timeout_seconds=0.3, max_age_seconds=0.2, max_response_bytes=1024)
    async with running_api(settings, database_url, webhooks=hooks) as api:
        with (
            receiving(Receiver(redirect="http://127.0.0.1:9/elsewhere")) as redirecting,
            receiving(Receiver(delay_s=5)) as slow,
            receiving(Receiver(body_bytes=50_000_000)) as huge,
        ):
            ids = [(await register(api, alice, r.url))["id"] for r in (redirecting, slow, huge)]
            await finish_job(api, alice)
            outcomes = [await settled(api, alice, endpoint_id) for endpoint_id in ids]
    assert outcomes[0]["status"] == "failed"
    assert outcomes[0]["last_status_code"] == 302
    assert "redirects are not followed" in outcomes[0]["last_error"]
    assert outcomes[1]["status"] == "failed"
    assert "no complete response" in outcomes[1]["last_error"]
    assert (outcomes[2]["status"], outcomes[2]["last_status_code"]) == ("succeeded", 200)


async def test_owners_only(hooked: Api, accounts: dict[str, Account]) -> None:
    alice, bob, admin = accounts["alice"], accounts["bob"], accounts["admin"]
    with receiving(Receiver()) as receiver:
        endpoint = await register(hooked, alice, receiver.url)
        await finish_job(hooked, bob)  # bob's job: nothing for alice's endpoint
        job_id = await finish_job(hooked, alice)
        delivery = await settled(hooked, alice, endpoint["id"])
    assert [r.body for r in receiver.received if job_id.encode() not in r.body] == []
    base = f"/api/webhooks/{endpoint['id']}"
    for other in (bob, admin):
        listed = await hooked.http.get("/api/webhooks", headers=other.headers)
        assert endpoint["id"] not in listed.text
        for method, path in (
            ("GET", base), ("PATCH", base), ("DELETE", base), ("POST", f"{base}/rotate-secret"),
            ("GET", f"{base}/deliveries"), ("GET", f"{base}/deliveries/{delivery['id']}"),
            ("POST", f"{base}/deliveries/{delivery['id']}/redeliver"),
        ):  # fmt: skip
            body = {"enabled": False} if method == "PATCH" else None
            r = await hooked.http.request(method, path, headers=other.headers, json=body)
            assert r.status_code == 404, (method, path, r.text)
    r = await hooked.http.get("/api/webhooks")
    assert r.status_code == 401
    r = await hooked.http.get(base, headers=alice.headers)
    assert r.status_code == 200


async def test_rotation_signs_with_both_secrets(hooked: Api, accounts: dict[str, Account]) -> None:
    alice = accounts["alice"]
    with receiving(Receiver()) as receiver:
        endpoint = await register(hooked, alice, receiver.url)
        r = await hooked.http.post(
            f"/api/webhooks/{endpoint['id']}/rotate-secret", headers=alice.headers
        )
        assert r.status_code == 200, r.text
        rotated = r.json()
        assert rotated["secret"] != endpoint["secret"]
        assert rotated["rotating_until"] is not None
        await finish_job(hooked, alice)
        await settled(hooked, alice, endpoint["id"])
    [got] = receiver.received
    for secret in (endpoint["secret"], rotated["secret"]):
        Webhook(secret).verify(got.body, got.headers)


async def test_bad_input_names_the_field(api: Api, accounts: dict[str, Account]) -> None:
    alice = accounts["alice"]
    cases = [
        ({"url": "https://example.com/", "events": ["job.exploded"]}, "events"),
        ({"url": "https://example.com/", "events": []}, "events"),
        ({"events": ENDS}, "url"),
        ({"url": "https://example.com/", "events": ENDS, "extra": 1}, "extra"),
    ]
    for body, field in cases:
        r = await api.http.post("/api/webhooks", json=body, headers=alice.headers)
        assert r.status_code == 422, r.text
        assert r.json()["error"]["field"].endswith(field), r.text


async def test_progress_when_asked_for(hooked: Api, accounts: dict[str, Account]) -> None:
    alice = accounts["alice"]
    with receiving(Receiver()) as receiver:
        endpoint = await register(hooked, alice, receiver.url, ["job.progress", "job.completed"])
        await hooked.http.post("/api/jobs", json=job_body(), headers=alice.headers)
        queue = hooked.services.queue
        claimed = await claim(queue)
        await queue.progress(claimed, 50, "half")
        await queue.complete(claimed, None)

        async def both() -> list[dict[str, Any]] | None:
            rows = await deliveries(hooked, alice, endpoint["id"])
            done = [r for r in rows if r["status"] == "succeeded"]
            return done if len(done) == 2 else None

        rows = await both_or_fail(both)
    assert sorted(r["event_type"] for r in rows) == ["job.completed", "job.progress"]
    bodies = [Webhook(endpoint["secret"]).verify(r.body, r.headers) for r in receiver.received]
    progress = next(b for b in bodies if b["type"] == "job.progress")
    assert (progress["data"]["progress"], progress["data"]["message"]) == (50, "half")


async def both_or_fail(check: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = await eventually(check)
    return rows
