"""One attempt of one delivery: sign it the Standard Webhooks way and POST it, safely.

- Signed with the ``standardwebhooks`` library: ``webhook-id`` (the delivery's id, the same on
  every attempt), ``webhook-timestamp`` and ``webhook-signature`` (HMAC-SHA256 over
  ``id.timestamp.body``; during a secret rotation, one signature per secret, space-separated).
- Sent to the address the SSRF check approved (``addresses.Target.pinned_url``), with the
  original Host header and TLS server name, so DNS cannot change between check and connect.
- No redirects followed, no proxies from the environment, the whole attempt bounded by
  ``timeout_seconds``, and at most ``max_response_bytes`` of the response read.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import httpx
from standardwebhooks import Webhook

from emp_core.errors import InvalidInput
from emp_sql.webhook_outbox import Claimed, Outcome
from emp_web.webhooks import addresses
from emp_web.webhooks.settings import WebhookSettings

USER_AGENT = "EMP-Webhooks/1"


def signature_headers(
    delivery_id: str, body: str, secrets: tuple[str, ...], at: datetime
) -> dict[str, str]:
    at = at.astimezone(UTC).replace(microsecond=0)
    signatures = [Webhook(s).sign(delivery_id, at, body) for s in secrets]
    return {
        "webhook-id": delivery_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": " ".join(signatures),
    }


def new_client() -> httpx.AsyncClient:
    return httpx.AsyncClient(follow_redirects=False, trust_env=False, timeout=httpx.Timeout(30.0))


class Sender:
    """Sends attempts through one HTTP client (its connections are reused)."""

    def __init__(self, settings: WebhookSettings, client: httpx.AsyncClient | None = None) -> None:
        self.settings = settings
        self.client = client or new_client()

    async def aclose(self) -> None:
        await self.client.aclose()

    async def send(self, claimed: Claimed) -> Outcome:
        started, clock = datetime.now(UTC), time.perf_counter()

        def outcome(status: int | None, error: str | None) -> Outcome:
            ms = int((time.perf_counter() - clock) * 1000)
            return Outcome(started_at=started, duration_ms=ms, status_code=status, error=error)

        if claimed.refused is not None:
            return outcome(None, claimed.refused)
        s = self.settings
        try:
            async with asyncio.timeout(s.timeout_seconds):
                target = await addresses.check(
                    claimed.url, allow_networks=s.allow_networks, allow_http=s.allow_http
                )
                status = await self._post(target, claimed, started)
        except InvalidInput as exc:
            return outcome(None, f"refused: {exc.message}")
        except TimeoutError:
            return outcome(None, f"no complete response within {s.timeout_seconds:g} s")
        except httpx.HTTPError as exc:
            return outcome(None, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
        if 300 <= status < 400:
            return outcome(status, "redirects are not followed")
        return outcome(status, None if 200 <= status < 300 else f"HTTP {status}")

    async def _post(self, target: addresses.Target, claimed: Claimed, at: datetime) -> int:
        headers = {
            "host": target.host_header,
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            **signature_headers(claimed.id, claimed.body, claimed.secrets, at),
        }
        extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
        request = self.client.build_request(
            "POST", target.pinned_url, content=claimed.body.encode(), headers=headers,
            extensions=extensions,
        )  # fmt: skip
        response = await self.client.send(request, stream=True)
        try:
            read = 0
            async for chunk in response.aiter_raw():
                read += len(chunk)
                if read >= self.settings.max_response_bytes:
                    break  # the rest is dropped with the connection
        finally:
            await response.aclose()
        return response.status_code
