"""Admins manage error patterns in the studio: non-admins are kept out, CSRF is checked, bad
input stands next to its field, a stale save is 409 with a message, the test panel classifies
before saving, and a change shows in the history."""

from __future__ import annotations

import re
from typing import Any

from studio_helpers import Visitor

from emp_core.patterns.store import read_snapshot
from emp_core.queue.queue import Queue


def form(**overrides: Any) -> dict[str, Any]:
    return {
        "name": "OOM", "connector": "simulation", "match_kind": "substring",
        "pattern": "CUDA out of memory", "category": "out_of_memory", "retryable": "true",
        "retry_delay_s": "", "user_message": "The GPU ran out of memory.", "priority": "5",
        "enabled": "true", **overrides,
    }  # fmt: skip


async def test_non_admins_cannot_open_the_pattern_pages(alice: Visitor) -> None:
    for path in ("/admin/patterns", "/admin/patterns/new"):
        assert (await alice.get(path)).status_code == 403
    assert (await alice.post("/admin/patterns/new", form())).status_code == 403


async def test_create_edit_conflict_and_history(admin: Visitor, queue: Queue) -> None:
    await admin.get("/admin/patterns/new")
    created = await admin.post("/admin/patterns/new", form())
    assert created.status_code == 303, created.text
    location = created.headers["location"]
    pattern_id = location.split("/")[-1].split("?")[0]
    snapshot = await read_snapshot(queue.redis, queue.keys)
    assert snapshot is not None
    assert [r.id for r in snapshot.rules] == [pattern_id]

    page = (await admin.get(location)).text
    assert 'data-testid="pattern-saved"' in page
    assert 'data-testid="pattern-chart"' in page
    first = await admin.post(f"/admin/patterns/{pattern_id}", form(priority="7", version="1"))
    assert first.status_code == 303
    stale = await admin.post(f"/admin/patterns/{pattern_id}", form(priority="9", version="1"))
    assert stale.status_code == 409
    assert 'data-testid="pattern-conflict"' in stale.text
    page = (await admin.get(f"/admin/patterns/{pattern_id}")).text
    assert page.count('data-testid="history-row"') == 2
    assert re.search(r"<strong>priority</strong>: <del>5</del> → <ins>7</ins>", page)

    listing = (await admin.get("/admin/patterns?connector=simulation")).text
    assert listing.count('data-testid="pattern-row"') == 1
    toggled = await admin.post(
        f"/admin/patterns/{pattern_id}/enabled", {"enabled": "false", "version": "2"}
    )
    assert toggled.status_code == 303
    snapshot = await read_snapshot(queue.redis, queue.keys)
    assert snapshot is not None
    assert snapshot.rules == ()
    assert "confirm-delete" in (await admin.get(f"/admin/patterns/{pattern_id}/delete")).text
    deleted = await admin.post(f"/admin/patterns/{pattern_id}/delete", {"version": "3"})
    assert deleted.status_code == 303
    assert (await admin.get(f"/admin/patterns/{pattern_id}")).status_code == 404


async def test_bad_input_and_csrf(admin: Visitor) -> None:
    await admin.get("/admin/patterns/new")
    for overrides, field in (
        ({"match_kind": "regex", "pattern": "(a+)+$"}, "pattern"),
        ({"pattern": " "}, "pattern"),
        ({"connector": "nope"}, "connector"),
        ({"category": "weather"}, "category"),
    ):
        response = await admin.post("/admin/patterns/new", form(**overrides))
        assert response.status_code == 422, overrides
        assert f'data-testid="error-{field}"' in response.text
    refused = await admin.http.post("/admin/patterns/new", data=form())
    assert refused.status_code == 403
    assert (await admin.get("/admin/patterns")).text.count('data-testid="pattern-row"') == 0


async def test_the_test_panel_classifies_before_saving(admin: Visitor) -> None:
    await admin.get("/admin/patterns/new")
    response = await admin.post(
        "/admin/patterns/test",
        form(test_message="RuntimeError: CUDA out of memory", retryable=""),
        headers={"HX-Request": "true"},
    )
    assert response.status_code == 200
    assert "This pattern matches." in response.text
    assert "The GPU ran out of memory." in response.text
    assert "<td>no</td>" in response.text
