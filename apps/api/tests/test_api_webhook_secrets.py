"""Webhook secrets sealed at rest, on real SQLite and PostgreSQL: the columns hold no plaintext
after create and rotate, deliveries still verify with the standardwebhooks library, keys rotate,
an unknown key id fails that endpoint's deliveries with a recorded reason, rows from before
sealing (migration 0006) are sealed at start, and the key's own rules (PostgreSQL refuses to
start without EMP_DATA_KEY, SQLite makes a key file once)."""

from __future__ import annotations

import asyncio
import stat
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from api_helpers import postgres_database, running_api
from pydantic import SecretStr
from sqlalchemy import select, text
from standardwebhooks import Webhook
from webhook_helpers import Receiver, local_settings, receiving

from emp_core.jobs.events import EventType, JobEvent
from emp_core.security.envcrypt import EnvKey, MissingKey
from emp_core.security.sealing import DATA_KEY_ENV
from emp_core.settings import QueueSettings
from emp_sql import Database, DatabaseSettings, Role, UserRepository, migrate
from emp_sql.data_key import KEY_FILE
from emp_sql.models import WebhookAttempt, WebhookDelivery
from emp_sql.webhook_outbox import WebhookOutbox
from emp_sql.webhook_secrets import seal_stored
from emp_sql.webhooks import EndpointWithSecret, WebhookRepository, new_secret
from emp_web.backends import Backends
from emp_web.testing import web_settings_for
from emp_web.webhooks.dispatcher import WebhookDispatcher

K1, K2 = EnvKey.generate("k1").encode(), EnvKey.generate("k2").encode()


@pytest.fixture(params=["sqlite", "postgres"])
def any_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database at the migrations' head: a SQLite file, then PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'emp.db'}"
        asyncio.run(migrate.upgrade(DatabaseSettings(database_url=url)))
        yield url
        return
    with postgres_database() as url:
        asyncio.run(migrate.upgrade(DatabaseSettings(database_url=url)))
        yield url


@pytest.fixture
async def opened(any_url: str) -> AsyncIterator[list[Database]]:
    """Databases opened by ``_db``, disposed after the test."""
    dbs: list[Database] = []
    yield dbs
    for db in dbs:
        await db.dispose()


def _db(dbs: list[Database], url: str, key: str) -> Database:
    db = Database(DatabaseSettings(database_url=url, data_key=SecretStr(key)))
    dbs.append(db)
    return db


async def _user(db: Database) -> str:
    async with db.session() as session:
        user = await UserRepository(session).create(
            f"seal-{uuid.uuid4().hex[:8]}@example.com", "a long password 1", role=Role.USER
        )
        return user.id


async def _endpoint(db: Database, user_id: str, url: str) -> EndpointWithSecret:
    """A progress endpoint for ``user_id``, its secret sealed with ``db``'s key."""
    async with db.session() as session:
        repo = WebhookRepository(session, user_id)
        return await repo.create(url, ["job.progress"], sealer=db.sealer)


async def _stored(db: Database, endpoint_id: str) -> tuple[str, str | None]:
    async with db.session() as session:
        row = (
            await session.execute(
                text("SELECT secret, previous_secret FROM webhook_endpoints WHERE id = :id"),
                {"id": endpoint_id},
            )
        ).one()
    return row[0], row[1]


async def _deliver(db: Database, user_id: str) -> str:
    """Queue one progress delivery for ``user_id``'s endpoints and run a dispatcher round on
    ``db`` (its key); returns the delivery's id."""
    event = JobEvent(
        event_id=uuid.uuid4().hex, job_id=uuid.uuid4().hex, type=EventType.PROGRESS,
        status="running", at=datetime.now(UTC), progress=50.0,
    )  # fmt: skip
    async with db.session() as session:
        await WebhookOutbox(session).enqueue_progress(event, user_id)
        delivery_id = await session.scalar(
            select(WebhookDelivery.id).where(WebhookDelivery.job_id == event.job_id)
        )
    dispatcher = WebhookDispatcher(db, local_settings())
    try:
        assert await dispatcher.run_once() == 1
    finally:
        await dispatcher.sender.aclose()
    assert delivery_id is not None
    return delivery_id


async def _attempts(db: Database, delivery_id: str) -> list[WebhookAttempt]:
    async with db.session() as session:
        rows = await session.scalars(
            select(WebhookAttempt).where(WebhookAttempt.delivery_id == delivery_id)
        )
        return list(rows)


async def test_no_plaintext_after_create_and_rotate_and_deliveries_verify(
    any_url: str, opened: list[Database]
) -> None:
    db = _db(opened, any_url, K1)
    user_id = await _user(db)
    with receiving(Receiver()) as receiver:
        made = await _endpoint(db, user_id, receiver.url)
        secret, previous = await _stored(db, made.id)
        assert secret.startswith("sealed:v1:k1:")
        assert previous is None
        assert made.secret not in secret
        assert made.secret.removeprefix("whsec_") not in secret
        async with db.session() as session:
            rotated = await WebhookRepository(session, user_id).rotate_secret(
                made.id, sealer=db.sealer
            )
        secret, previous = await _stored(db, made.id)
        assert previous is not None
        for column in (secret, previous):
            assert column.startswith("sealed:v1:k1:")
            for plain in (made.secret, rotated.secret):
                assert plain not in column
                assert plain.removeprefix("whsec_") not in column
        await _deliver(db, user_id)
    [got] = receiver.received
    for plain in (made.secret, rotated.secret):  # both sign during the rotation
        assert Webhook(plain).verify(got.body, got.headers)["type"] == "job.progress"


async def test_keys_rotate_old_rows_stay_readable_and_move_to_the_new_key(
    any_url: str, opened: list[Database]
) -> None:
    old = _db(opened, any_url, K1)
    user_id = await _user(old)
    with receiving(Receiver()) as receiver:
        made = await _endpoint(old, user_id, receiver.url)
        both = _db(opened, any_url, f"{K2},{K1}")
        await _deliver(both, user_id)  # a k1 row, read by a ring whose current key is k2
        assert (await _stored(both, made.id))[0].startswith("sealed:v1:k1:")
        report = await seal_stored(both)
        assert (report.sealed, dict(report.unopenable)) == (1, {})
        assert (await _stored(both, made.id))[0].startswith("sealed:v1:k2:")
        assert (await seal_stored(both)).sealed == 0  # nothing left to move
        await _deliver(_db(opened, any_url, K2), user_id)  # k1 retired
    assert len(receiver.received) == 2
    for got in receiver.received:
        Webhook(made.secret).verify(got.body, got.headers)


async def test_an_unknown_key_id_fails_that_endpoints_deliveries_with_a_reason(
    any_url: str, opened: list[Database]
) -> None:
    db = _db(opened, any_url, K1)
    user_id = await _user(db)
    with receiving(Receiver()) as receiver:
        await _endpoint(db, user_id, receiver.url)
        wrong = _db(opened, any_url, K2)
        delivery_id = await _deliver(wrong, user_id)  # returns: the loop goes on
        assert receiver.received == []
    [attempt] = await _attempts(wrong, delivery_id)
    assert attempt.status_code is None
    assert not attempt.succeeded
    assert attempt.error is not None
    assert "secret cannot be unsealed" in attempt.error
    assert "'k1'" in attempt.error
    assert DATA_KEY_ENV in attempt.error
    async with wrong.session() as session:
        row = await session.get(WebhookDelivery, delivery_id)
        assert row is not None
        assert row.status == "pending"
    report = await seal_stored(wrong)
    assert (report.sealed, dict(report.unopenable)) == (0, {"k1": 1})


async def test_a_row_from_before_sealing_is_sealed_at_start(
    any_url: str,
    opened: list[Database],
    settings: QueueSettings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A database at 0006 with a plaintext secret, upgraded to head: the secret still signs,
    and an API starting on it seals the row."""
    db = _db(opened, any_url, K1)
    await migrate.downgrade(db.settings, "0006_operations")
    plain = new_secret()
    user_id = await _user(db)
    with receiving(Receiver()) as receiver:
        async with db.session() as session:
            await session.execute(
                text(
                    "INSERT INTO webhook_endpoints (id, user_id, url, events, description, "
                    "enabled, secret, created_at, updated_at) VALUES (:id, :user, :url, "
                    "'[\"job.progress\"]', '', true, :secret, :now, :now)"
                ),
                {"id": "e" * 32, "user": user_id, "url": receiver.url, "secret": plain,
                 "now": datetime.now(UTC)},
            )  # fmt: skip
        await migrate.upgrade(db.settings)
        assert await _stored(db, "e" * 32) == (plain, None)
        await _deliver(db, user_id)  # plaintext from before still signs
        monkeypatch.setenv(DATA_KEY_ENV, K1)  # the API reads its key from the environment
        async with running_api(settings, any_url):
            pass
        secret, _ = await _stored(db, "e" * 32)
        assert secret.startswith("sealed:v1:k1:")
        assert plain not in secret
        await _deliver(db, user_id)
    assert len(receiver.received) == 2
    for got in receiver.received:
        Webhook(plain).verify(got.body, got.headers)


async def test_postgres_without_a_key_refuses_to_start(
    settings: QueueSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(DATA_KEY_ENV)
    with postgres_database() as url:
        await migrate.upgrade(DatabaseSettings(database_url=url))
        with web_settings_for(settings, url) as web, pytest.raises(MissingKey) as info:
            await Backends.open(web, ws_backlog=8)
    assert f"{DATA_KEY_ENV} is not set" in info.value.message
    assert "emp env keygen" in info.value.message


async def test_sqlite_makes_one_key_file_and_keeps_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(DATA_KEY_ENV)
    url = f"sqlite+aiosqlite:///{tmp_path / 'data' / 'emp.db'}"
    first, second = (Database(DatabaseSettings(database_url=url)) for _ in range(2))
    try:
        sealed = first.sealer.seal("whsec_x", "webhook_endpoints:a")
        assert second.sealer.unseal(sealed, "webhook_endpoints:a") == "whsec_x"
        path = tmp_path / "data" / KEY_FILE
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert path.read_text().startswith("local:")
        assert [p.name for p in path.parent.iterdir()] == [KEY_FILE]  # no temporary left
    finally:
        await first.dispose()
        await second.dispose()
