"""A job's output files: the API signs their download URLs afresh whenever the job is read, and
the URLs fetch the bytes from the blob store (no big file through Redis)."""

from __future__ import annotations

from typing import Any

import httpx
from api_helpers import Api

from emp_core.queue.queue import Queue
from emp_web.testing import Account, claim

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


async def _one(data: bytes) -> Any:
    yield data


async def test_reading_a_job_signs_its_output_urls_afresh(
    api: Api, accounts: dict[str, Account], queue: Queue
) -> None:
    alice = accounts["alice"]
    body = {"service": "diffusers", "payload": {"prompt": "a cat", "width": 64, "height": 64}}
    submitted = await api.http.post("/api/jobs", json=body, headers=alice.headers)
    assert submitted.status_code == 201, submitted.text
    claimed = await claim(queue, service="diffusers")
    path = f"outputs/{alice.user_id}/{claimed.id}/0.png"
    await api.app.state.services.backends.blobs.put(path, _one(PNG))
    image = {"path": path, "content_type": "image/png", "size": len(PNG), "width": 64,
             "height": 64, "url": "http://127.0.0.1:9/blobs/long-expired"}  # fmt: skip
    await queue.complete(claimed, {"images": [image], "seed": 3})

    got = await api.http.get(f"/api/jobs/{claimed.id}", headers=alice.headers)
    assert got.status_code == 200
    entry = got.json()["result"]["images"][0]
    assert entry["url"] != image["url"]
    assert entry["url"].startswith(f"http://{api.host}/blobs/{path}?")
    async with httpx.AsyncClient() as plain:  # anyone holding the URL, for its lifetime
        fetched = await plain.get(entry["url"])
    assert fetched.status_code == 200
    assert fetched.content == PNG
    listed = await api.http.get("/api/jobs", headers=alice.headers)
    assert listed.json()["jobs"][0]["result"]["images"][0]["url"].startswith(
        f"http://{api.host}/blobs/"
    )
    # Another user cannot read the job, so gets no URL.
    other = await api.http.get(f"/api/jobs/{claimed.id}", headers=accounts["bob"].headers)
    assert other.status_code == 404
