"""Settings › Webhooks: a user registers an endpoint and sees its secret once, lists its
deliveries and redelivers one; nobody else sees any of it."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import update
from studio_helpers import Studio, Visitor, running_studio

from emp_core.queue.queue import Queue
from emp_core.settings import QueueSettings
from emp_sql import Database, DatabaseSettings
from emp_sql.archive import ArchiveProjector
from emp_sql.models import WebhookDelivery
from emp_web.testing import Account, claim
from emp_web.webhooks.settings import WebhookSettings


@pytest.fixture
async def studio(settings: QueueSettings, database_url: str) -> AsyncIterator[Studio]:
    hooks = WebhookSettings(allow_networks="127.0.0.0/8", allow_http=True)
    async with running_studio(settings, database_url, webhooks=hooks) as running:
        yield running


async def test_register_see_the_secret_once_and_redeliver(
    alice: Visitor, bob: Visitor, accounts: dict[str, Account], queue: Queue, database_url: str
) -> None:
    page = await alice.get("/settings/webhooks")
    assert page.status_code == 200
    refused = await alice.post(
        "/settings/webhooks", {"url": "https://10.0.0.1/x", "events": ["job.completed"]}
    )
    assert refused.status_code == 422
    assert 'data-testid="error-url"' in refused.text
    assert "private address" in refused.text
    made = await alice.post(
        "/settings/webhooks",
        {"url": "http://127.0.0.1:9/hooks", "events": ["job.completed", "job.failed"]},
    )
    assert made.status_code == 200, made.text
    secret = re.search(r'data-testid="webhook-secret-value">(whsec_[^<]+)<', made.text)
    assert secret is not None
    again = await alice.get("/settings/webhooks")
    assert secret.group(1) not in again.text
    assert "127.0.0.1:9/hooks" in again.text
    endpoint_id = re.search(r'href="/settings/webhooks/([0-9a-f]{32})"', again.text)
    assert endpoint_id is not None
    base = f"/settings/webhooks/{endpoint_id.group(1)}"

    # A finished job of alice's: the projector puts its delivery in the outbox.
    await queue.submit({"service": "simulation", "customer_id": accounts["alice"].user_id})
    claimed = await claim(queue)
    await queue.complete(claimed, {"ok": True})
    db = Database(DatabaseSettings(database_url=database_url))
    try:
        await ArchiveProjector(queue, db).project([claimed.id])
        async with db.session() as session:
            await session.execute(update(WebhookDelivery).values(status="failed", attempts=3))
    finally:
        await db.dispose()
    listing = await alice.get(base)
    assert listing.status_code == 200
    assert claimed.id[:12] in listing.text
    assert 'data-testid="delivery-status">failed' in listing.text
    delivery_id = re.search(r'data-delivery="(msg_[0-9a-f]{32})"', listing.text)
    assert delivery_id is not None
    redo = await alice.post(f"{base}/deliveries/{delivery_id.group(1)}/redeliver")
    assert redo.status_code == 303
    assert 'data-testid="delivery-status">pending' in (await alice.get(base)).text

    # bob sees none of it.
    assert endpoint_id.group(1) not in (await bob.get("/settings/webhooks")).text
    assert (await bob.get(base)).status_code == 404
    for path in ("/rotate", "/delete", f"/deliveries/{delivery_id.group(1)}/redeliver"):
        assert (await bob.post(base + path)).status_code == 404, path
    rotated = await alice.post(f"{base}/rotate")
    assert "webhook-secret-value" in rotated.text
    assert secret.group(1) not in rotated.text
