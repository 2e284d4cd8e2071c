"""The pure parts: form text to a job spec, error paths to form fields, results to pictures and
tables, events to a timeline, and times for people."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from starlette.datastructures import FormData

from emp_core.errors import InvalidInput
from emp_core.jobs.events import EventType, JobEvent
from emp_studio.forms import FORM, JobForm, field_errors, form_field
from emp_studio.render import age, duration
from emp_studio.results import Clipped, ImageRef, present
from emp_studio.timeline import entries, failed_attempts

SVG = "data:image/svg+xml;base64,PHN2Zy8+"


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("priority", "priority"),
        ("payload", "payload"),
        ("requirements.gpu_memory_gb", "need_gpu_memory_gb"),
        ("requirements.capabilities.gpu.vendor", "need_caps"),
        ("requirements.models.0", "need_models"),
        ("requirements.exclude.models", "avoid_models"),
        ("requirements.exclude.capabilities.x", "avoid_caps"),
        ("requirements.exclude", "avoid_caps"),
        ("customer_id", FORM),
        (None, FORM),
        ("payloadx", FORM),
    ],
)
def test_error_paths_map_to_form_fields(path: str | None, field: str) -> None:
    assert form_field(path) == field


def test_field_errors_drop_the_path_prefix() -> None:
    exc = InvalidInput("priority: Input should be less than 1000", field="priority")
    assert field_errors(exc) == {"priority": "Input should be less than 1000"}


def test_a_form_becomes_a_spec() -> None:
    form = FormData(
        [
            ("service", " simulation "), ("priority", "7"), ("max_attempts", "2"),
            ("payload", '{"steps": 2}'), ("need_cpu_cores", "4"), ("need_strict", "on"),
            ("need_cap_path", "cuda"), ("need_cap_value", "12.4"),
            ("need_cap_path", "tags"), ("need_cap_value", '["a", "b"]'),
            ("need_cap_path", ""), ("need_cap_value", ""),
            ("avoid_models", "old-model"),
        ]
    )  # fmt: skip
    spec = JobForm.from_form(form).to_spec()
    assert spec == {
        "service": "simulation",
        "priority": 7,
        "max_attempts": 2,
        "payload": {"steps": 2},
        "requirements": {
            "cpu_cores": 4,
            "customer_isolation": "strict",
            "capabilities": {"cuda": 12.4, "tags": ["a", "b"]},
            "exclude": {"models": ["old-model"]},
        },
    }


def test_an_empty_payload_is_an_empty_object() -> None:
    assert JobForm(payload="  ").to_spec()["payload"] == {}


def test_results_lift_images_and_clip_long_text() -> None:
    shown = present({"image": SVG, "seed": 3, "log": "x" * 5000, "frames": [SVG, "plain"]})
    assert [i.src for i in shown.images] == [SVG, SVG]
    assert [i.label for i in shown.images] == ["image", "frames 1"]
    assert shown.value["image"] == ImageRef(1)
    assert shown.value["frames"] == [ImageRef(2), "plain"]
    assert isinstance(shown.value["log"], Clipped)
    assert shown.value["log"].more == 3000
    # A script in a data: URL is not an image, and neither is a URL without an image extension.
    assert not present("data:text/html;base64,PHNjcmlwdD4=").images
    assert not present("https://example.com/page").images
    assert present("https://cdn.example.com/a/b.png?sig=1").images


def _event(kind: EventType, n: int, **fields: object) -> JobEvent:
    at = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=n)
    return JobEvent(event_id=f"{n}-0", job_id="j", type=kind, status=kind.value, at=at, **fields)


def test_the_timeline_leaves_progress_out_and_lists_failed_attempts() -> None:
    events = [
        _event(EventType.SUBMITTED, 1),
        _event(EventType.CLAIMED, 2, worker_id="w1", attempt=1),
        _event(EventType.PROGRESS, 3, progress=50),
        _event(EventType.RETRYING, 4, attempt=1, error="OOM"),
        _event(EventType.CLAIMED, 5, worker_id="w2", attempt=2),
        _event(EventType.FAILED, 6, attempt=2, error="OOM again"),
    ]
    titles = [e.title for e in entries(events)]
    assert titles == [
        "Submitted", "Started by w1 (attempt 1)", "Failed (attempt 1), will retry",
        "Started by w2 (attempt 2)", "Failed (attempt 2)",
    ]  # fmt: skip
    failures = failed_attempts(events)
    assert [(f.attempt, f.error, f.retried) for f in failures] == [
        (1, "OOM", True),
        (2, "OOM again", False),
    ]


def test_times_read_well() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert age(now - timedelta(seconds=2), now) == "just now"
    assert age(now - timedelta(seconds=42), now) == "42 s ago"
    assert age(now - timedelta(minutes=3), now) == "3 min ago"
    assert duration(0.25) == "250 ms"
    assert duration(3.21) == "3.2 s"
    assert duration(7500) == "2 h 5 min"
    assert duration(3 * 86400) == "3 d"
    assert duration(None) == "—"
