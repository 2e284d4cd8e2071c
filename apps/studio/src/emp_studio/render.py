"""Rendering: the Jinja2 environment with its filters, whole pages, fragments and redirects.

Pages get the signed-in viewer and the session's CSRF token without each route passing them.
Fragments (for WebSockets and htmx partials) render the same templates with no request.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from emp_core.jobs.job import CANCELLABLE, JobStatus
from emp_studio import __version__
from emp_studio.results import Clipped, ImageRef
from emp_studio.session import csrf_token

TEMPLATES = Path(__file__).parent / "templates"


def age(value: datetime | None, now: datetime | None = None) -> str:
    """How long ago, in the largest unit that reads well: ``12 s ago``, ``3 min ago``."""
    if value is None:
        return "—"
    seconds = ((now or datetime.now(UTC)) - value).total_seconds()
    if seconds < 5:
        return "just now"
    return f"{duration(seconds)} ago"


def duration(seconds: float | None) -> str:
    """A span of time for people: ``850 ms``, ``12 s``, ``3 min``, ``2 h 5 min``, ``4 d``."""
    if seconds is None or not math.isfinite(seconds):
        return "—"
    seconds = max(0.0, seconds)
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    minutes = seconds / 60
    if minutes < 60:
        return f"{minutes:.0f} min"
    hours, rest = divmod(int(minutes), 60)
    if hours < 24:
        return f"{hours} h {rest} min" if rest else f"{hours} h"
    return f"{hours // 24} d"


def clock(value: datetime | None) -> str:
    """A timestamp in UTC; the page's script shows it in the reader's own time zone."""
    if value is None:
        return "—"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def iso(value: datetime | None) -> str:
    return "" if value is None else value.astimezone(UTC).isoformat()


def percent(value: float | None) -> str:
    return f"{value or 0:.0f}%"


def filesize(size: int | None) -> str:
    """Bytes for people: ``812 B``, ``14.2 MB``, ``1.86 GB`` (powers of 1000, as browsers show)."""
    if size is None:
        return "—"
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.3g} {unit}"
        value /= 1000
    return f"{size} B"  # unreachable


def sentence(text: str | None) -> str:
    """Text as a sentence: its first letter upper case, a full stop at the end."""
    if not text:
        return ""
    text = text[:1].upper() + text[1:]
    return text if text[-1] in ".!?)" else f"{text}."


_RETRY_PROMISE = re.compile(r"[^.;!?]*\b(we will|we'll) try again\b[^.!?]*[.!?]?\s*", re.I)


def final(message: str | None) -> str:
    """A failure's user message for a job that failed for good: a sentence promising another
    attempt (an admin's pattern may still say "We will try again") is left out."""
    text = _RETRY_PROMISE.sub("", message or "").strip(" ;,")
    return sentence(text) if text else ""


def shown(value: Any) -> str:
    """A stored value as a person reads it: Yes/No for booleans, a dash for nothing."""
    if isinstance(value, bool):
        return "Yes" if value else "No"
    return "—" if value is None or value == "" else str(value)


def ordinal(n: int) -> str:
    """``1st``, ``2nd``, ``3rd``, ``4th``, ``11th``, ``21st``: a place in line."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def cancellable(status: str) -> bool:
    return status in {s.value for s in CANCELLABLE}


def _templates() -> Jinja2Templates:
    templates = Jinja2Templates(directory=TEMPLATES)
    env = templates.env
    env.filters.update(
        age=age,
        duration=duration,
        clock=clock,
        iso=iso,
        percent=percent,
        sentence=sentence,
        filesize=filesize,
        final=final,
        shown=shown,
        ordinal=ordinal,
    )
    env.tests.update(
        image_ref=lambda v: isinstance(v, ImageRef), clipped=lambda v: isinstance(v, Clipped)
    )
    env.globals.update(
        version=__version__,
        statuses=[s.value for s in JobStatus],
        cancellable=cancellable,
    )
    # Templates are trimmed so that the HTML sent over WebSockets carries no blank lines.
    env.trim_blocks = True
    env.lstrip_blocks = True
    return templates


templates = _templates()


def is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


def page(
    request: Request,
    name: str,
    context: Mapping[str, Any] | None = None,
    *,
    status_code: int = 200,
    headers: Mapping[str, str] | None = None,
) -> HTMLResponse:
    """Render a page (or an htmx partial) with the viewer and the CSRF token in its context."""
    # The last-resort 500 handler runs outside the session middleware: no session, no token.
    has_session = "session" in request.scope
    full = {
        "viewer": getattr(request.state, "viewer", None),
        "csrf": csrf_token(request.session) if has_session else "",
        "path": request.url.path,
        **(context or {}),
    }
    return templates.TemplateResponse(
        request, name, full, status_code=status_code, headers=dict(headers or {})
    )


def fragment(name: str, context: Mapping[str, Any]) -> str:
    """A template rendered to text with no request (WebSocket messages)."""
    return templates.get_template(name).render(**context)


def redirect(request: Request, url: str) -> Response:
    """Go to ``url``: htmx follows an ``HX-Redirect`` header, a plain browser a 303."""
    if is_htmx(request):
        return Response(status_code=200, headers={"HX-Redirect": url})
    return RedirectResponse(url, status_code=303)
