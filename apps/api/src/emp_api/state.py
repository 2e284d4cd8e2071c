"""What one API process holds for its lifetime: clients, services and the event hub."""

from __future__ import annotations

from dataclasses import dataclass, field

from emp_api.settings import ApiSettings
from emp_core.telemetry import Telemetry
from emp_sql.auth import Authenticator
from emp_web.backends import Backends
from emp_web.ratelimit import Rule, RuleSet
from emp_web.services import WebServices
from emp_web.settings import WebSettings


@dataclass(frozen=True, slots=True)
class Rules(RuleSet):
    """The API's rate limits (``EMP_API_*_LIMITS``)."""

    token_failures: Rule = field(metadata={"setting": "token_failure_limits"})
    submit: Rule


@dataclass(slots=True)
class Services(WebServices[ApiSettings, Rules]):
    auth: Authenticator = field(kw_only=True)  # bearer tokens, cached for a few seconds

    @classmethod
    async def start(cls, web: WebSettings, api: ApiSettings, telemetry: Telemetry) -> Services:
        """Connect, install the Function library (refusing an older code's downgrade) and
        subscribe to the events channel."""
        b = await Backends.open(web, ws_backlog=api.ws_backlog)
        auth = Authenticator(b.database, cache_seconds=api.auth_cache_seconds)
        # A published revocation drops the revoked tokens from this process's cache at once.
        b.hub.on_revocation(lambda revoked: auth.drop(None if revoked is None else revoked.ends))
        return cls(
            **WebServices.parts(b, web), telemetry=telemetry, settings=api, rules=Rules.of(api),
            auth=auth,
        )  # fmt: skip
