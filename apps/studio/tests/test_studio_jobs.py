"""Submitting, listing, reading and cancelling jobs through the pages, errors next to their
fields, and nobody seeing anybody else's jobs."""

from __future__ import annotations

import re

import pytest
from studio_helpers import Visitor, job_form

from emp_core.jobs.job import JobStatus
from emp_core.queue.queue import Queue
from emp_web.testing import claim


async def _submit(visitor: Visitor, **fields: str) -> str:
    await visitor.get("/jobs/new")
    response = await visitor.post("/jobs", job_form(**fields))
    assert response.status_code == 303, response.text
    location = response.headers["location"]
    assert location.startswith("/jobs/")
    return location.removeprefix("/jobs/")


async def test_submit_creates_a_job_owned_by_the_user(
    alice: Visitor, queue: Queue, accounts: dict
) -> None:
    job_id = await _submit(
        alice,
        priority="70",
        need_gpu_memory_gb="8",
        need_models="sd15, sdxl",
        need_cap_path="gpu.vendor",
        need_cap_value="nvidia",
        avoid_cap_path="preemptible",
    )
    job = await queue.get(job_id)
    assert job.customer_id == accounts["alice"].user_id
    assert job.priority == 70
    assert job.requirements.gpu_memory_gb == 8
    assert job.requirements.models == ["sd15", "sdxl"]
    assert job.requirements.capabilities == {"gpu.vendor": "nvidia"}
    assert job.requirements.exclude.capabilities == {"preemptible": True}
    page = await alice.get(f"/jobs/{job_id}")
    assert page.status_code == 200
    assert 'data-testid="job-status">pending' in page.text
    assert f'ws-connect="/ws/jobs/{job_id}"' in page.text
    assert 'data-testid="cancel-job"' in page.text


@pytest.mark.parametrize(
    ("fields", "field", "text"),
    [
        ({"payload": "{not json"}, "payload", "not valid JSON"),
        ({"payload": "[1, 2]"}, "payload", "JSON object"),
        ({"priority": "5000"}, "priority", "less than or equal to 1000"),
        ({"priority": "high"}, "priority", "whole number"),
        ({"service": "Not A Service!"}, "service", "pattern"),
        ({"max_attempts": "0"}, "max_attempts", "greater than or equal to 1"),
        ({"need_gpu_memory_gb": "-2"}, "need_gpu_memory_gb", "greater than or equal to 0"),
        ({"need_cap_path": "bad path!", "need_cap_value": "1"}, "need_caps", "dotted path"),
        ({"avoid_cap_value": "x"}, "avoid_caps", "name the capability"),
    ],
)
async def test_form_errors_stand_next_to_their_field(
    alice: Visitor, queue: Queue, fields: dict[str, str], field: str, text: str
) -> None:
    await alice.get("/jobs/new")
    response = await alice.post("/jobs", job_form(**fields))
    assert response.status_code == 422
    error = re.search(rf'data-testid="error-{field}">([^<]*)<', response.text)
    assert error, f"no error next to {field}"
    assert text.lower() in error.group(1).lower()
    # What was typed comes back, so nothing has to be typed twice.
    for value in fields.values():
        assert value.replace('"', "&#34;").replace("<", "&lt;") in response.text
    assert await queue.depth() == {}


async def test_htmx_form_errors_return_the_form_alone(alice: Visitor) -> None:
    await alice.get("/jobs/new")
    response = await alice.post("/jobs", job_form(payload="{"), headers={"HX-Request": "true"})
    assert response.status_code == 422
    assert response.text.lstrip().startswith("<form")
    assert 'data-testid="error-payload"' in response.text


async def test_another_users_job_is_not_found(alice: Visitor, bob: Visitor) -> None:
    job_id = await _submit(alice)
    unknown = "f" * 32
    for path in (f"/jobs/{job_id}", f"/jobs/{job_id}/row"):
        page = await bob.get(path)
        assert page.status_code == 404
        # Word for word the answer for a job that does not exist: nothing tells the two apart.
        missing = await bob.get(path.replace(job_id, unknown))
        assert page.text.replace(job_id, unknown) == missing.text
    cancel = await bob.post(f"/jobs/{job_id}/cancel")
    assert cancel.status_code == 404
    assert (await alice.get(f"/jobs/{job_id}")).status_code == 200
    assert (await alice.get("/jobs/no-such-job")).status_code == 404


async def test_my_jobs_lists_only_mine_and_admins_see_everyone(
    alice: Visitor, bob: Visitor, admin: Visitor, accounts: dict
) -> None:
    mine = [await _submit(alice) for _ in range(2)]
    theirs = await _submit(bob, service="other-svc")
    page = (await alice.get("/jobs")).text
    assert all(job_id[:8] in page for job_id in mine)
    assert theirs[:8] not in page
    everyone = (await admin.get("/jobs")).text
    assert all(job_id[:8] in everyone for job_id in [*mine, theirs])
    assert accounts["bob"].email in everyone  # the owner column
    only_bob = (await admin.get(f"/jobs?owner={accounts['bob'].user_id}")).text
    assert theirs[:8] in only_bob
    assert mine[0][:8] not in only_bob
    by_service = (await admin.get("/jobs?service=other-svc")).text
    assert theirs[:8] in by_service
    assert mine[0][:8] not in by_service


async def test_the_list_pages_with_a_cursor(alice: Visitor, studio, queue: Queue) -> None:
    studio.app.state.services.settings.page_size = 2
    ids = [await _submit(alice) for _ in range(5)]
    seen: list[str] = []
    url: str | None = "/jobs"
    while url:
        page = (await alice.get(url)).text
        seen += re.findall(r'data-job-id="([0-9a-f]+)"', page)
        older = re.search(r'href="([^"]+)" data-testid="older"', page)
        url = older.group(1).replace("&amp;", "&") if older else None
    assert seen == list(reversed(ids))


async def test_filters_and_empty_states(alice: Visitor, queue: Queue) -> None:
    empty = (await alice.get("/jobs")).text
    assert 'data-testid="jobs-empty"' in empty
    job_id = await _submit(alice)
    await queue.cancel(job_id)
    cancelled = (await alice.get("/jobs?status=cancelled")).text
    assert job_id[:8] in cancelled
    pending = (await alice.get("/jobs?status=pending")).text
    assert 'data-testid="jobs-empty-filtered"' in pending
    partial = await alice.get(
        "/jobs?status=cancelled", headers={"HX-Request": "true", "HX-Target": "jobs-results"}
    )
    assert partial.text.lstrip().startswith('<section id="jobs-results"')


async def test_a_running_row_polls_and_a_finished_one_does_not(
    alice: Visitor, queue: Queue
) -> None:
    job_id = await _submit(alice)
    row = (await alice.get(f"/jobs/{job_id}/row")).text
    assert 'hx-trigger="every 2s"' in row
    claimed = await claim(queue)
    await queue.progress(claimed, 40, "step 2 of 5")
    row = (await alice.get(f"/jobs/{job_id}/row")).text
    assert 'value="40.0"' in row
    await queue.complete(claimed, {"ok": True})
    row = (await alice.get(f"/jobs/{job_id}/row")).text
    assert "hx-trigger" not in row
    assert 'data-status="completed"' in row


async def test_a_completed_job_shows_its_image_and_a_table(alice: Visitor, queue: Queue) -> None:
    job_id = await _submit(alice)
    claimed = await claim(queue)
    image = "data:image/svg+xml;base64,PHN2Zy8+"
    await queue.complete(claimed, {"image": image, "seed": 7, "meta": {"sampler": "euler"}})
    page = (await alice.get(f"/jobs/{job_id}")).text
    assert f'src="{image}"' in page
    assert 'data-testid="result-image"' in page
    assert '<th scope="row">sampler</th>' in page
    assert "image 1, shown above" in page
    assert "ws-connect" not in page  # a finished job's page opens no socket
    assert 'data-testid="cancel-job"' not in page


async def test_a_failed_job_shows_its_error_and_attempts(alice: Visitor, queue: Queue) -> None:
    job_id = await _submit(alice, max_attempts="2")
    first = await claim(queue)
    assert await queue.fail(first, "CUDA out of memory", delay_s=0) == "retrying"
    await queue.reap()
    second = await claim(queue)
    assert await queue.fail(second, "CUDA out of memory again") == "failed"
    page = (await alice.get(f"/jobs/{job_id}")).text
    assert 'data-testid="job-failure"' in page
    assert "Failed after 2 attempts" in page
    assert page.count('data-testid="job-attempt"') == 2
    assert "CUDA out of memory again" in page
    assert "2 of 2" in page


async def test_cancel_a_job(alice: Visitor, queue: Queue) -> None:
    job_id = await _submit(alice)
    response = await alice.post(f"/jobs/{job_id}/cancel", headers={"HX-Request": "true"})
    assert response.status_code == 200
    assert 'hx-swap-oob="true"' in response.text
    assert "Cancelled" in response.text
    assert (await queue.get(job_id)).status == JobStatus.CANCELLED
    again = await alice.post(f"/jobs/{job_id}/cancel", headers={"HX-Request": "true"})
    assert again.status_code == 409
    assert again.headers["HX-Retarget"] == "#notices"


async def test_everyones_jobs_page_in_submit_order(
    alice: Visitor, bob: Visitor, admin: Visitor, studio
) -> None:
    studio.app.state.services.settings.page_size = 2
    ids = []
    for who in (alice, bob, bob, alice, bob):
        ids.append(await _submit(who))
    seen: list[str] = []
    url: str | None = "/jobs"
    while url:
        page = (await admin.get(url)).text
        seen += re.findall(r'data-job-id="([0-9a-f]+)"', page)
        older = re.search(r'href="([^"]+)" data-testid="older"', page)
        url = older.group(1).replace("&amp;", "&") if older else None
    assert seen == list(reversed(ids))
