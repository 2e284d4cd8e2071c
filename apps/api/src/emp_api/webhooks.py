"""``/api/webhooks``: the caller's webhook endpoints, their secrets and their deliveries.

Every route is the caller's own: another user's endpoint or delivery is 404, like a missing one.
A secret is in the response only when it is made (create, rotate).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from emp_api.deps import PrincipalDep, ServicesDep
from emp_api.schemas import ERRORS
from emp_api.state import Services
from emp_sql.webhooks import (
    EVENT_TYPES,
    DeliveryView,
    EndpointView,
    EndpointWithSecret,
    WebhookRepository,
    parse_events,
)
from emp_web.webhooks import addresses

router = APIRouter(prefix="/api/webhooks", tags=["webhooks"], responses={**ERRORS})

EndpointId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="An endpoint id.")]
DeliveryId = Annotated[str, Path(pattern=r"^msg_[0-9a-f]{32}$", description="A delivery id.")]


class EndpointIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(max_length=addresses.MAX_URL_LENGTH, examples=["https://example.com/hooks"])
    events: list[str] = Field(
        min_length=1, max_length=len(EVENT_TYPES), description=f"Any of {', '.join(EVENT_TYPES)}."
    )
    description: str = Field(default="", max_length=200)


class EndpointPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(default=None, max_length=addresses.MAX_URL_LENGTH)
    events: list[str] | None = Field(default=None, min_length=1, max_length=len(EVENT_TYPES))
    description: str | None = Field(default=None, max_length=200)
    enabled: bool | None = None


class EndpointList(BaseModel):
    endpoints: list[EndpointView]


class AttemptOut(BaseModel):
    attempt: int
    started_at: datetime
    duration_ms: int
    status_code: int | None
    succeeded: bool
    error: str | None


class DeliveryOut(BaseModel):
    id: str = Field(description="The `webhook-id` header: the same on every attempt.")
    endpoint_id: str
    event_type: str
    job_id: str | None
    status: str = Field(description="pending, succeeded or failed")
    attempts: int
    created_at: datetime
    next_attempt_at: datetime | None
    finished_at: datetime | None
    last_status_code: int | None
    last_error: str | None

    @classmethod
    def of(cls, v: DeliveryView) -> DeliveryOut:
        return cls(
            id=v.id, endpoint_id=v.endpoint_id, event_type=v.event_type, job_id=v.job_id,
            status=v.status, attempts=v.attempts, created_at=v.created_at,
            next_attempt_at=v.next_attempt_at, finished_at=v.finished_at,
            last_status_code=v.last_status_code, last_error=v.last_error,
        )  # fmt: skip


class DeliveryDetail(DeliveryOut):
    body: str = Field(description="The exact bytes sent, as text.")
    history: list[AttemptOut]


class DeliveryList(BaseModel):
    deliveries: list[DeliveryOut]


async def _checked(url: str, services: Services) -> str:
    s = services.webhooks
    target = await addresses.check(url, allow_networks=s.allow_networks, allow_http=s.allow_http)
    return target.url


@router.post("", status_code=201, summary="Register a webhook endpoint")
async def create_endpoint(
    body: EndpointIn, principal: PrincipalDep, services: ServicesDep
) -> EndpointWithSecret:
    parse_events(body.events)  # before the URL's DNS look-up: the cheap check first
    url = await _checked(body.url, services)
    async with services.database.session() as db:
        return await WebhookRepository(db, principal.user_id).create(
            url, body.events, body.description, sealer=services.database.sealer
        )


@router.get("", summary="List the caller's webhook endpoints")
async def list_endpoints(principal: PrincipalDep, services: ServicesDep) -> EndpointList:
    async with services.database.session() as db:
        views = await WebhookRepository(db, principal.user_id).endpoints()
    return EndpointList(endpoints=views)


@router.get("/{endpoint_id}", summary="Read a webhook endpoint")
async def get_endpoint(
    endpoint_id: EndpointId, principal: PrincipalDep, services: ServicesDep
) -> EndpointView:
    async with services.database.session() as db:
        return await WebhookRepository(db, principal.user_id).get(endpoint_id)


@router.patch("/{endpoint_id}", summary="Change a webhook endpoint")
async def update_endpoint(
    endpoint_id: EndpointId, body: EndpointPatch, principal: PrincipalDep, services: ServicesDep
) -> EndpointView:
    if body.events is not None:
        parse_events(body.events)
    url = None if body.url is None else await _checked(body.url, services)
    async with services.database.session() as db:
        return await WebhookRepository(db, principal.user_id).update(
            endpoint_id, url=url, events=body.events, description=body.description,
            enabled=body.enabled,
        )  # fmt: skip


@router.delete("/{endpoint_id}", status_code=204, summary="Delete a webhook endpoint")
async def delete_endpoint(
    endpoint_id: EndpointId, principal: PrincipalDep, services: ServicesDep
) -> Response:
    async with services.database.session() as db:
        await WebhookRepository(db, principal.user_id).delete(endpoint_id)
    return Response(status_code=204)


@router.post("/{endpoint_id}/rotate-secret", summary="Replace an endpoint's secret")
async def rotate_secret(
    endpoint_id: EndpointId, principal: PrincipalDep, services: ServicesDep
) -> EndpointWithSecret:
    """A new secret, shown only in this response. For 24 hours deliveries carry a signature by
    the previous secret as well, so receivers can switch without missing one."""
    async with services.database.session() as db:
        return await WebhookRepository(db, principal.user_id).rotate_secret(
            endpoint_id, sealer=services.database.sealer
        )


@router.get("/{endpoint_id}/deliveries", summary="An endpoint's deliveries, newest first")
async def list_deliveries(
    endpoint_id: EndpointId,
    principal: PrincipalDep,
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> DeliveryList:
    async with services.database.session() as db:
        views = await WebhookRepository(db, principal.user_id).deliveries(endpoint_id, limit=limit)
    return DeliveryList(deliveries=[DeliveryOut.of(v) for v in views])


@router.get("/{endpoint_id}/deliveries/{delivery_id}", summary="A delivery and its attempts")
async def get_delivery(
    endpoint_id: EndpointId, delivery_id: DeliveryId, principal: PrincipalDep,
    services: ServicesDep,
) -> DeliveryDetail:  # fmt: skip
    async with services.database.session() as db:
        v = await WebhookRepository(db, principal.user_id).delivery(endpoint_id, delivery_id)
    history = [AttemptOut(**vars_of(a)) for a in v.history]
    return DeliveryDetail(**DeliveryOut.of(v).model_dump(), body=v.body, history=history)


@router.post(
    "/{endpoint_id}/deliveries/{delivery_id}/redeliver", status_code=202,
    summary="Send a finished delivery again",
)  # fmt: skip
async def redeliver(
    endpoint_id: EndpointId, delivery_id: DeliveryId, principal: PrincipalDep,
    services: ServicesDep,
) -> DeliveryOut:  # fmt: skip
    """The same `webhook-id` and body, on a fresh retry schedule; 409 while it is still being
    attempted."""
    async with services.database.session() as db:
        v = await WebhookRepository(db, principal.user_id).redeliver(
            endpoint_id, delivery_id, max_age=services.webhooks.max_age
        )
    return DeliveryOut.of(v)


def vars_of(attempt: object) -> dict[str, object]:
    return {name: getattr(attempt, name) for name in AttemptOut.model_fields}
