"""Settings of the studio process, read from ``EMP_STUDIO_*`` environment variables.

The queue (``EMP_REDIS_URL``, ``EMP_QUEUE``, …) and the database (``EMP_DATABASE_URL``) have
settings classes of their own in ``emp_core``; this one holds what only the studio needs.
"""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIN_SECRET_LENGTH = 32
# Values copied from examples and templates: a key anyone can read signs anyone's session.
_PLACEHOLDERS = ("change", "secret", "example", "placeholder", "xxxx", "dev-key", "todo")


class StudioSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EMP_STUDIO_", env_file=".env", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8001, ge=0, le=65535)
    log_level: str = "info"
    # Signs the session cookie. Unset: a random key per process, so sessions end when the process
    # restarts and several processes would not accept each other's cookies; set it in production.
    secret_key: SecretStr | None = None
    # A session ends after this long whatever happens (absolute lifetime), and earlier when it
    # has not been used for session_idle_seconds.
    session_max_age_seconds: int = Field(default=7 * 24 * 3600, gt=0)
    session_idle_seconds: int = Field(default=12 * 3600, gt=0)
    # Development mode (``make dev``, the tests): the session cookie may travel over plain HTTP.
    dev: bool = False
    # The session cookie's Secure flag: unset means on unless in development mode (and always on
    # for a request that came over HTTPS).
    cookie_secure: bool | None = None
    page_size: int = Field(default=25, ge=1, le=200)
    # The dashboard re-renders at most this often however many events arrive (s), and at least
    # every ``dashboard_idle_seconds`` so that workers going quiet show without an event.
    dashboard_min_interval_seconds: float = Field(default=1.0, gt=0)
    dashboard_idle_seconds: float = Field(default=5.0, gt=0)
    # A waiting job's page recomputes its place in line this often (s) while its socket is open:
    # a bounded computation (emp_core.queue.position: commands grow with workers and classes,
    # never with the jobs pending), and only a changed place is sent.
    position_refresh_seconds: float = Field(default=5.0, gt=0)
    # Events a live page may have waiting; past it the oldest progress events are dropped.
    ws_backlog: int = Field(default=256, ge=8)
    # Largest form body accepted (bytes): above the 1 MB payload limit, so that an oversized
    # payload is refused next to its field and only anything bigger with 413.
    max_body_bytes: int = Field(default=2_000_000, gt=0)
    # Rate limits, as the ``limits`` library writes them ("5/minute;10/10 minutes"; "" is off),
    # counted in Redis across every studio process. Failed sign-ins per account and per address
    # (windows of growing length: a growing delay), and job submits per user.
    signin_account_limits: str = "5/minute;10/10 minutes;20/hour"
    signin_address_limits: str = "20/minute;100/hour"
    submit_limits: str = "20/second;1000/minute"
    # A request's head must arrive within header_timeout_seconds, its body within
    # body_timeout_seconds: slow clients cannot hold requests open.
    header_timeout_seconds: float = Field(default=10.0, gt=0)
    body_timeout_seconds: float = Field(default=30.0, gt=0)

    @property
    def secure_cookie(self) -> bool:
        return (not self.dev) if self.cookie_secure is None else self.cookie_secure

    @field_validator("secret_key")
    @classmethod
    def _real_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        secret = value.get_secret_value()
        if len(secret) < MIN_SECRET_LENGTH:
            raise ValueError(f"must be at least {MIN_SECRET_LENGTH} characters")
        if any(word in secret.lower() for word in _PLACEHOLDERS):
            raise ValueError("looks like a placeholder; generate one: `openssl rand -hex 32`")
        return value
