"""The dispatcher: takes due deliveries from the outbox (``emp_sql.webhook_outbox``), sends each
(``sender``) and records what happened, until cancelled.

Any number of dispatchers, in any number of processes, share one outbox: a claim gives each due
delivery to one of them for a lease. A dispatcher killed mid-request never records that attempt;
the delivery is due again when the lease passes and is sent again with the same ``webhook-id``
(at least once; receivers deduplicate by the id). Nothing is held in memory between rounds, so a
restart loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from datetime import timedelta

from sqlalchemy.exc import SQLAlchemyError

from emp_sql.session import Database
from emp_sql.webhook_outbox import Claimed, WebhookOutbox
from emp_web.webhooks.sender import Sender
from emp_web.webhooks.settings import WebhookSettings

logger = logging.getLogger(__name__)


def backoff(attempt: int, settings: WebhookSettings, rng: random.Random | None = None) -> timedelta:
    """The wait after failed attempt ``attempt`` (1-based): exponential, capped, jittered."""
    delay = min(settings.backoff_cap_seconds, settings.backoff_base_seconds * 2 ** (attempt - 1))
    return timedelta(seconds=delay * (rng or random).uniform(0.5, 1.0))


class WebhookDispatcher:
    def __init__(
        self, database: Database, settings: WebhookSettings, sender: Sender | None = None
    ) -> None:
        self.database = database
        self.settings = settings
        self.sender = sender or Sender(settings)
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Look for due deliveries now rather than at the next poll."""
        self._wake.set()

    async def run_once(self) -> int:
        """Claim what is due (up to ``concurrency``), send it all, record it; returns how many
        deliveries were attempted."""
        s = self.settings
        async with self.database.session() as session:
            claimed = await WebhookOutbox(session, max_age=s.max_age).claim_due(
                limit=s.concurrency, lease=s.lease, sealer=self.database.sealer
            )
        if claimed:
            await asyncio.gather(*(self._deliver(c) for c in claimed))
        return len(claimed)

    async def _deliver(self, claimed: Claimed) -> None:
        outcome = await self.sender.send(claimed)
        async with self.database.session() as session:
            status = await WebhookOutbox(session).finish(
                claimed, outcome, backoff(claimed.attempt, self.settings)
            )
        if status == "failed":
            logger.warning(
                "webhook delivery %s failed for good after %d attempts: %s",
                claimed.id, claimed.attempt, outcome.error,
            )  # fmt: skip

    async def run(self) -> None:
        """Dispatch until cancelled; a database error pauses one poll, never stops the loop."""
        try:
            while True:
                try:
                    busy = await self.run_once()
                except (SQLAlchemyError, OSError) as exc:
                    logger.warning("webhook dispatcher paused after an error: %s", exc)
                    busy = 0
                if busy >= self.settings.concurrency:
                    continue  # more may be due at once
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.settings.poll_seconds)
        finally:
            await self.sender.aclose()
