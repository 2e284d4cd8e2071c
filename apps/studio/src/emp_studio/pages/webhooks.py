"""Settings › Webhooks: the signed-in user's endpoints, their secrets (shown once) and deliveries.

Every page reads and writes the viewer's own endpoints only (``WebhookRepository`` is scoped to
the viewer): another user's endpoint is a 404, as in the API.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Path, Request
from fastapi.responses import Response

from emp_core.errors import EmpError
from emp_sql.webhooks import EVENT_TYPES, WebhookRepository, parse_events
from emp_studio.deps import ServicesDep, ViewerDep, verify_csrf
from emp_studio.render import page, redirect
from emp_studio.state import Services
from emp_web.webhooks import addresses

logger = logging.getLogger(__name__)

router = APIRouter(dependencies=[Depends(verify_csrf)])

BASE = "/settings/webhooks"
EndpointId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$")]
DeliveryId = Annotated[str, Path(pattern=r"^msg_[0-9a-f]{32}$")]


async def _list_page(
    request: Request,
    services: Services,
    user_id: str,
    *,
    form: Mapping[str, object] | None = None,
    errors: dict[str, str] | None = None,
    secret: tuple[str, str] | None = None,
    status_code: int = 200,
) -> Response:
    async with services.database.session() as db:
        endpoints = await WebhookRepository(db, user_id).endpoints()
    context: dict[str, object] = {
        "nav": "webhooks",
        "endpoints": endpoints,
        "event_types": EVENT_TYPES,
        "form": form or {"url": "", "description": "", "events": list(EVENT_TYPES[:3])},
        "errors": errors or {},
        # (endpoint id, secret): shown on this one response, never stored anywhere it is read.
        "secret": secret,
    }
    return page(request, "webhooks.html", context, status_code=status_code)


@router.get(BASE)
async def webhooks_page(request: Request, viewer: ViewerDep, services: ServicesDep) -> Response:
    return await _list_page(request, services, viewer.user_id)


@router.post(BASE)
async def create_endpoint(
    request: Request,
    viewer: ViewerDep,
    services: ServicesDep,
    url: Annotated[str, Form(max_length=addresses.MAX_URL_LENGTH)] = "",
    description: Annotated[str, Form(max_length=200)] = "",
    events: Annotated[list[str] | None, Form()] = None,
) -> Response:
    chosen = events or []
    s = services.webhooks
    try:
        parse_events(chosen)
        target = await addresses.check(
            url, allow_networks=s.allow_networks, allow_http=s.allow_http
        )
        async with services.database.session() as db:
            made = await WebhookRepository(db, viewer.user_id).create(
                target.url, chosen, description, sealer=services.database.sealer
            )
    except EmpError as exc:
        form = {"url": url, "description": description, "events": chosen}
        return await _list_page(
            request, services, viewer.user_id, form=form,
            errors={exc.field or "url": exc.message}, status_code=422,
        )  # fmt: skip
    logger.info("%s registered webhook endpoint %s", viewer.email, made.id)
    return await _list_page(request, services, viewer.user_id, secret=(made.id, made.secret))


@router.post(BASE + "/{endpoint_id}/rotate")
async def rotate_secret(
    request: Request, endpoint_id: EndpointId, viewer: ViewerDep, services: ServicesDep
) -> Response:
    async with services.database.session() as db:
        made = await WebhookRepository(db, viewer.user_id).rotate_secret(
            endpoint_id, sealer=services.database.sealer
        )
    return await _list_page(request, services, viewer.user_id, secret=(made.id, made.secret))


@router.post(BASE + "/{endpoint_id}/enabled")
async def set_enabled(
    request: Request,
    endpoint_id: EndpointId,
    viewer: ViewerDep,
    services: ServicesDep,
    enabled: Annotated[str, Form(max_length=8)] = "",
) -> Response:
    async with services.database.session() as db:
        await WebhookRepository(db, viewer.user_id).update(endpoint_id, enabled=enabled == "on")
    return redirect(request, BASE)


@router.post(BASE + "/{endpoint_id}/delete")
async def delete_endpoint(
    request: Request, endpoint_id: EndpointId, viewer: ViewerDep, services: ServicesDep
) -> Response:
    async with services.database.session() as db:
        await WebhookRepository(db, viewer.user_id).delete(endpoint_id)
    return redirect(request, BASE)


@router.get(BASE + "/{endpoint_id}")
async def deliveries_page(
    request: Request, endpoint_id: EndpointId, viewer: ViewerDep, services: ServicesDep
) -> Response:
    async with services.database.session() as db:
        repo = WebhookRepository(db, viewer.user_id)
        endpoint = await repo.get(endpoint_id)
        deliveries = await repo.deliveries(endpoint_id, limit=100)
    context = {"nav": "webhooks", "endpoint": endpoint, "deliveries": deliveries}
    return page(request, "webhook_deliveries.html", context)


@router.post(BASE + "/{endpoint_id}/deliveries/{delivery_id}/redeliver")
async def redeliver(
    request: Request,
    endpoint_id: EndpointId,
    delivery_id: DeliveryId,
    viewer: ViewerDep,
    services: ServicesDep,
) -> Response:
    async with services.database.session() as db:
        await WebhookRepository(db, viewer.user_id).redeliver(
            endpoint_id, delivery_id, max_age=services.webhooks.max_age
        )
    return redirect(request, f"{BASE}/{endpoint_id}")
