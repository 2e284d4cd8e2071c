"""Admins' error-pattern pages (ADR-009): the list with filters and the unmatched failures, a
form with a live test panel, enable/disable, delete with confirmation, change history and a
chart of matches per day. Every change goes through ``PatternAdmin``, which publishes it."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response

from emp_core.errors import Conflict, EmpError
from emp_core.patterns import CONNECTORS, Category, PatternSpec
from emp_core.patterns.counts import unmatched
from emp_core.patterns.portable import starter_specs
from emp_sql.error_patterns import PatternFilter, as_dict
from emp_sql.models import ErrorPatternChange
from emp_studio.chart import daily_chart
from emp_studio.deps import AdminDep, ServicesDep, verify_csrf
from emp_studio.render import fragment, page, redirect
from emp_studio.state import Services

logger = logging.getLogger(__name__)

router = APIRouter(dependencies=[Depends(verify_csrf)])

_CHECKBOXES = ("case_sensitive", "retryable", "enabled")
_BLANK: dict[str, Any] = {
    "name": "", "connector": "", "match_kind": "substring", "pattern": "", "category": "unknown",
    "retryable": True, "retry_delay_s": None, "user_message": "", "priority": 0,
    "case_sensitive": False, "enabled": True, "version": None,
}  # fmt: skip


def _common() -> dict[str, Any]:
    return {
        "nav": "patterns",
        "connectors": sorted(CONNECTORS),
        "categories": [c.value for c in Category],
    }


async def _form_fields(request: Request) -> dict[str, Any]:
    """The pattern form as ``PatternSpec`` input (checkboxes, blank numbers), plus version."""
    raw = await request.form()
    fields: dict[str, Any] = {
        k: v for k, v in raw.items() if isinstance(v, str) and k in PatternSpec.model_fields
    }
    for name in _CHECKBOXES:
        fields[name] = raw.get(name) == "true"
    if not fields.get("retry_delay_s"):
        fields["retry_delay_s"] = None
    fields["priority"] = _int_or_raw(fields.get("priority", "0") or "0")
    fields["version"] = raw.get("version")
    fields["test_message"] = raw.get("test_message") or ""
    return fields


def _int_or_raw(value: Any) -> Any:
    try:
        return int(value)
    except (TypeError, ValueError):
        return value  # PatternSpec names the field


def _diff(change: ErrorPatternChange) -> list[tuple[str, Any, Any]]:
    before, after = change.before or {}, change.after or {}
    skip = {"version", "updated_at", "updated_by"}
    names = [n for n in (after or before) if n not in skip]
    return [
        (n, before.get(n, "—"), after.get(n, "—")) for n in names if before.get(n) != after.get(n)
    ]


async def _form_page(
    request: Request, services: Services, *, pattern_id: str | None, form: dict[str, Any],
    errors: dict[str, str] | None = None, conflict: str | None = None, saved: bool = False,
    status_code: int = 200,
) -> Response:  # fmt: skip
    context: dict[str, Any] = {
        **_common(), "pattern_id": pattern_id, "form": form, "errors": errors or {},
        "conflict": conflict, "saved": saved, "test_message": form.get("test_message", ""),
        "history": [], "chart": None, "updated_by": form.get("updated_by", ""),
        "starter": await _starter_in_use(services) if pattern_id is None else [],
    }  # fmt: skip
    if pattern_id is not None:
        changes = await services.patterns.history(pattern_id)
        context["history"] = [
            {"changed_at": c.changed_at, "changed_by": c.changed_by, "action": c.action,
             "diff": _diff(c)}
            for c in changes
        ]  # fmt: skip
        daily, _ = await services.patterns.stats(pattern_id=pattern_id)
        today = datetime.now(UTC).date()
        context["chart"] = daily_chart(daily.get(pattern_id, {}), today=today)
    return page(request, "pattern_form.html", context, status_code=status_code)


@router.get("/admin/patterns")
async def patterns_page(
    request: Request, admin: AdminDep, services: ServicesDep, connector: str = "",
    category: str = "", enabled: str = "", notice: str | None = None,
) -> Response:  # fmt: skip
    where = PatternFilter(
        connector="" if connector == "global" else (connector or None),
        category=category or None,
        enabled={"true": True, "false": False}.get(enabled),
    )
    rows = await services.patterns.find(where)
    _, totals = await services.patterns.stats()
    context = {
        **_common(), "patterns": rows, "totals": totals, "notice": notice,
        "starter": await _starter_in_use(services, rows),
        "filters": {"connector": connector, "category": category, "enabled": enabled},
        "unmatched": await unmatched(services.redis, services.queue.keys),
    }  # fmt: skip
    return page(request, "patterns.html", context)


async def _starter_in_use(services: Services, rows: list[Any] | None = None) -> list[PatternSpec]:
    """The starter set when no pattern is saved (workers use it then), else nothing."""
    if rows or await services.patterns.find():
        return []
    return starter_specs()


@router.post("/admin/patterns/import-starter")
async def import_starter(request: Request, admin: AdminDep, services: ServicesDep) -> Response:
    """Save the starter set as patterns (existing ones with the same name are updated)."""
    created, updated = await services.patterns.import_specs(starter_specs(), by=admin.email)
    logger.info("admin %s imported the starter patterns: %d new, %d updated", admin.email,
                created, updated)  # fmt: skip
    notice = f"Imported the starter set: {created} new, {updated} updated."
    return redirect(request, f"/admin/patterns?{urlencode({'notice': notice})}")


@router.get("/admin/patterns/new")
async def new_pattern_page(
    request: Request, admin: AdminDep, services: ServicesDep, message: str = ""
) -> Response:
    # "Create a pattern from this message": the message is both the pattern and the test.
    form = {**_BLANK, "pattern": message[:1000], "test_message": message}
    return await _form_page(request, services, pattern_id=None, form=form)


@router.post("/admin/patterns/new")
async def create_pattern(request: Request, admin: AdminDep, services: ServicesDep) -> Response:
    fields = await _form_fields(request)
    spec = {k: v for k, v in fields.items() if k in PatternSpec.model_fields}
    try:
        row = await services.patterns.create(spec, by=admin.email)
    except EmpError as exc:
        return await _form_page(
            request, services, pattern_id=None, form={**_BLANK, **fields},
            errors={exc.field or "name": exc.message}, status_code=422,
        )  # fmt: skip
    return redirect(request, f"/admin/patterns/{row.id}?saved=1")


@router.post("/admin/patterns/test")
async def try_pattern(
    request: Request, admin: AdminDep, services: ServicesDep, replaces: str | None = None
) -> Response:
    """The test panel (htmx): the form's unsaved pattern against the test message."""
    fields = await _form_fields(request)
    spec = {k: v for k, v in fields.items() if k in PatternSpec.model_fields}
    context: dict[str, Any] = {"outcome": None, "error": None, "by_candidate": False}
    message = str(fields.get("test_message") or "")
    if message:
        try:
            candidate = PatternSpec.parse(spec)
            outcome, by_candidate = await services.patterns.test(
                message, connector=candidate.connector, candidate=candidate, replaces=replaces
            )
            context.update(outcome=outcome, by_candidate=by_candidate)
        except EmpError as exc:
            context["error"] = exc.message
    return HTMLResponse(fragment("_pattern_test.html", context))


@router.get("/admin/patterns/{pattern_id}")
async def edit_pattern_page(
    request: Request, pattern_id: str, admin: AdminDep, services: ServicesDep, saved: int = 0
) -> Response:
    row = await services.patterns.get(pattern_id)
    form = {**as_dict(row), "connector": row.connector or ""}
    return await _form_page(request, services, pattern_id=pattern_id, form=form, saved=bool(saved))


@router.post("/admin/patterns/{pattern_id}")
async def save_pattern(
    request: Request, pattern_id: str, admin: AdminDep, services: ServicesDep
) -> Response:
    fields = await _form_fields(request)
    spec = {k: v for k, v in fields.items() if k in PatternSpec.model_fields}
    try:
        await services.patterns.update(
            pattern_id, spec, version=_int_or_raw(fields["version"]), by=admin.email
        )
    except Conflict as exc:
        # Two admins edited at once: keep this admin's text on the page and say what happened.
        return await _form_page(
            request, services, pattern_id=pattern_id, form={**_BLANK, **fields},
            conflict=f"Not saved: {exc.message}", status_code=409,
        )  # fmt: skip
    except EmpError as exc:
        return await _form_page(
            request, services, pattern_id=pattern_id, form={**_BLANK, **fields},
            errors={exc.field or "name": exc.message}, status_code=exc.status_code,
        )  # fmt: skip
    return redirect(request, f"/admin/patterns/{pattern_id}?saved=1")


@router.post("/admin/patterns/{pattern_id}/enabled")
async def toggle_pattern(
    request: Request, pattern_id: str, admin: AdminDep, services: ServicesDep
) -> Response:
    raw = await request.form()
    enabled = raw.get("enabled") == "true"
    try:
        row = await services.patterns.set_enabled(
            pattern_id, enabled, version=_int_or_raw(raw.get("version")), by=admin.email
        )
    except Conflict:
        return redirect(
            request, "/admin/patterns?notice=Someone+changed+that+pattern+first;+try+again."
        )
    state = "enabled" if row.enabled else "disabled"
    return redirect(request, f"/admin/patterns?notice={row.name}+{state}.")


@router.get("/admin/patterns/{pattern_id}/delete")
async def delete_pattern_page(
    request: Request, pattern_id: str, admin: AdminDep, services: ServicesDep
) -> Response:
    row = await services.patterns.get(pattern_id)
    return page(request, "pattern_delete.html", {**_common(), "pattern": row})


@router.post("/admin/patterns/{pattern_id}/delete")
async def delete_pattern(
    request: Request, pattern_id: str, admin: AdminDep, services: ServicesDep
) -> Response:
    raw = await request.form()
    row = await services.patterns.get(pattern_id)
    try:
        await services.patterns.delete(
            pattern_id, version=_int_or_raw(raw.get("version")), by=admin.email
        )
    except Conflict:
        return redirect(request, f"/admin/patterns/{pattern_id}")
    return redirect(request, f"/admin/patterns?notice=Deleted+{row.name}.")
