"""Webhook signing secrets at rest: both columns of ``webhook_endpoints`` (``secret`` and, during
a rotation, ``previous_secret``) hold values sealed by the database's ``Sealer``
(``emp_core.security.sealing``, key from ``EMP_DATA_KEY``), bound to their row. They are opened
in one place only, by the dispatcher about to sign a delivery.

Rows from before sealing hold plaintext (``whsec_…``, no ``sealed:v1:`` prefix): they still
sign, and ``seal_stored`` (run by every API process at start) seals them, and re-seals values
under a key other than the current one, so a key can be retired once its rows have moved.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.orm import InstrumentedAttribute

from emp_core.security.sealing import PREFIX, Sealer, SealError, key_id
from emp_sql.models import WebhookEndpoint
from emp_sql.session import Database

logger = logging.getLogger(__name__)

_BATCH = 500


def where(endpoint_id: str) -> str:
    """The associated data of an endpoint's secrets: a sealed secret opens in its own row only."""
    return f"webhook_endpoints:{endpoint_id}"


def seal(sealer: Sealer, endpoint_id: str, secret: str) -> str:
    return sealer.seal(secret, where(endpoint_id))


def signing_secrets(
    sealer: Sealer, endpoint: WebhookEndpoint, *, rotating: bool
) -> tuple[str, ...]:
    """The secrets that sign a delivery to ``endpoint``: its own, and the previous one while
    ``rotating``. Raises ``SealError`` (naming the column) when one does not open."""
    columns = [("secret", endpoint.secret)]
    if rotating and endpoint.previous_secret:
        columns.append(("previous secret", endpoint.previous_secret))
    opened = []
    for name, value in columns:
        try:
            opened.append(sealer.unseal(value, where(endpoint.id)))
        except SealError as exc:
            raise type(exc)(f"the endpoint's {name} cannot be unsealed: {exc.message}") from None
    return tuple(opened)


@dataclass
class SealReport:
    """What ``seal_stored`` did: values sealed (or re-sealed under the current key), and values
    it could not open, by the key id they name."""

    sealed: int = 0
    unopenable: Counter[str] = field(default_factory=Counter)


def _stale(column: InstrumentedAttribute[str | None], current: str) -> ColumnElement[bool]:
    # autoescape: key ids may hold "_", a LIKE wildcard.
    return and_(column.is_not(None), ~column.startswith(f"{PREFIX}{current}:", autoescape=True))


async def seal_stored(database: Database) -> SealReport:
    """Seal every plaintext secret and re-seal those under an older key, each with a
    compare-and-set on the value read, so API processes starting together never seal a value
    twice or undo each other. Logs counts and key ids, never a value. A database that cannot
    be reached is logged and left for the next start (its rows still sign meanwhile), as
    ``check_schema`` lets a process start without one."""
    try:
        return await _seal_stored(database)
    except (SQLAlchemyError, OSError) as exc:
        # The driver's message only: SQLAlchemy's own text lists the statement's parameters,
        # and the compare-and-set binds the plaintext it replaces.
        reason = exc.orig if isinstance(exc, DBAPIError) and exc.orig else type(exc).__name__
        logger.warning("webhook secrets were not sealed at start (the next start will): %s", reason)
        return SealReport()


async def _seal_stored(database: Database) -> SealReport:
    sealer, report = database.sealer, SealReport()
    current, after = sealer.current_kid, ""
    while True:
        async with database.session() as session:
            rows = (
                await session.execute(
                    select(
                        WebhookEndpoint.id, WebhookEndpoint.secret, WebhookEndpoint.previous_secret
                    )
                    .where(WebhookEndpoint.id > after)
                    .where(
                        or_(
                            _stale(WebhookEndpoint.secret, current),
                            _stale(WebhookEndpoint.previous_secret, current),
                        )
                    )
                    .order_by(WebhookEndpoint.id)
                    .limit(_BATCH)
                )
            ).all()
            for endpoint_id, secret, previous in rows:
                for column, value in (
                    (WebhookEndpoint.secret, secret), (WebhookEndpoint.previous_secret, previous),
                ):  # fmt: skip
                    if value is None or not sealer.needs_sealing(value):
                        continue
                    try:
                        sealed = seal(sealer, endpoint_id, sealer.unseal(value, where(endpoint_id)))
                    except SealError:
                        report.unopenable[key_id(value) or "?"] += 1
                        continue
                    result = await session.execute(
                        update(WebhookEndpoint)
                        .where(WebhookEndpoint.id == endpoint_id, column == value)
                        .values({column.key: sealed})
                    )
                    report.sealed += int(getattr(result, "rowcount", 0) or 0)
        if len(rows) < _BATCH:
            break
        after = rows[-1][0]
    if report.sealed:
        logger.info("sealed %d webhook secrets with data key %s", report.sealed, current)
    if report.unopenable:
        kids = ", ".join(f"{kid} ({n})" for kid, n in sorted(report.unopenable.items()))
        logger.warning(
            "webhook secrets sealed with keys EMP_DATA_KEY does not hold: %s; their endpoints' "
            "deliveries fail until the key is added back",
            kids,
        )
    return report


async def stored_by_key(database: Database) -> Counter[str]:
    """How many stored secret values (both columns) each key id sealed; plaintext ones count
    under ``""``. What an operator reads before retiring a key: none left under its id."""
    counts: Counter[str] = Counter()
    async with database.session() as session:
        result = await session.stream(
            select(WebhookEndpoint.secret, WebhookEndpoint.previous_secret)
        )
        async for secret, previous in result:
            for value in (secret, previous):
                if value is not None:
                    counts[key_id(value) or ""] += 1
    return counts
