"""What one studio process holds for its lifetime: clients, services and the event hub."""

from __future__ import annotations

from dataclasses import dataclass, field

from emp_core.telemetry import setup_telemetry
from emp_studio.settings import StudioSettings
from emp_web.backends import Backends
from emp_web.ratelimit import Rule, RuleSet
from emp_web.services import WebServices
from emp_web.sessions import SessionStore
from emp_web.settings import WebSettings


@dataclass(frozen=True, slots=True)
class Rules(RuleSet):
    """The studio's rate limits (``EMP_STUDIO_*_LIMITS``)."""

    signin_account: Rule
    signin_address: Rule
    submit: Rule


@dataclass(slots=True)
class Services(WebServices[StudioSettings, Rules]):
    sessions: SessionStore = field(kw_only=True)

    @classmethod
    async def start(cls, web: WebSettings, studio: StudioSettings) -> Services:
        """Connect, install the Function library and subscribe to the events channel."""
        b = await Backends.open(web, ws_backlog=studio.ws_backlog)
        sessions = SessionStore(
            b.redis, b.queue.keys, idle_seconds=studio.session_idle_seconds,
            max_seconds=studio.session_max_age_seconds,
        )  # fmt: skip
        # ADR-003: the heartbeat; exported only when OTEL_* configures it.
        telemetry = setup_telemetry("emp-studio")
        return cls(
            **WebServices.parts(b, web), telemetry=telemetry, settings=studio,
            rules=Rules.of(studio), sessions=sessions,
        )  # fmt: skip
