"""Settings of webhook delivery, read from ``EMP_WEBHOOK_*`` environment variables (an
operator's settings: users cannot change them)."""

from __future__ import annotations

from datetime import timedelta
from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class WebhookSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EMP_WEBHOOK_", env_file=".env", extra="ignore")

    # Run the dispatcher in this process (every API process may: each delivery goes to one).
    run_dispatcher: bool = True
    # Networks that URLs may resolve into although they are not public, e.g. "127.0.0.0/8" for
    # a local test receiver or "10.1.2.0/24" for a partner on a private link. Comma-separated.
    # Cloud metadata addresses are refused whatever this says.
    allow_networks: Annotated[list[IPv4Network | IPv6Network], NoDecode] = []
    # Plain http:// URLs (the secret still signs; nothing is encrypted). Off: https only.
    allow_http: bool = False
    # One attempt: the whole request, connect to last byte read.
    timeout_seconds: float = Field(default=10.0, gt=0)
    # The most of a response body that is read; the rest is dropped with the connection.
    max_response_bytes: int = Field(default=64 * 1024, ge=0)
    # Retries: base · 2^(attempt-1), capped, times a random factor in [0.5, 1]; the delivery
    # fails once the next try would land more than max_age after the event.
    backoff_base_seconds: float = Field(default=5.0, gt=0)
    backoff_cap_seconds: float = Field(default=3600.0, gt=0)
    max_age_seconds: float = Field(default=24 * 3600.0, gt=0)
    # How long a dispatcher holds a delivery it is sending; past it another may send it. Longer
    # than timeout_seconds, so only a dispatcher that died loses its deliveries.
    lease_seconds: float = Field(default=60.0, gt=0)
    poll_seconds: float = Field(default=1.0, gt=0)
    # Deliveries one dispatcher sends at once.
    concurrency: int = Field(default=16, ge=1, le=256)

    @field_validator("allow_networks", mode="before")
    @classmethod
    def _networks(cls, value: object) -> object:
        if isinstance(value, str):
            parts = [part.strip() for part in value.split(",")]
            return [ip_network(part, strict=False) for part in parts if part]
        return value

    @property
    def max_age(self) -> timedelta:
        return timedelta(seconds=self.max_age_seconds)

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.lease_seconds)
