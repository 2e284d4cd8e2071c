"""A job's output files, served to the signed-in owner (or an admin) from the blob store.

The result of an image job lists its files with blob paths and signed URLs; the URLs expire, and
a local store's URLs point at the API's origin, which the studio's Content-Security-Policy does
not let a page load from. So the studio shows ``/jobs/{id}/outputs/{n}.{ext}``: it checks the
viewer may see the job (``catalog.get``: 404 otherwise, as for the job) and streams the blob in
chunks (never through Redis, never whole in memory).
"""

from __future__ import annotations

import copy
from typing import Any

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from emp_core.errors import NotFound
from emp_core.jobs.job import Job
from emp_studio.deps import ServicesDep, ViewerDep

router = APIRouter()


def output_entries(job: Job) -> list[dict[str, Any]]:
    result = job.result if isinstance(job.result, dict) else {}
    images = result.get("images")
    return [i for i in images if isinstance(i, dict)] if isinstance(images, list) else []


def studio_result(job: Job) -> Any:
    """The job's result with each output's URL replaced by the studio's own (which checks who
    asks, and does not expire)."""
    entries = output_entries(job)
    if not entries or not all(isinstance(e.get("path"), str) for e in entries):
        return job.result
    result = copy.deepcopy(job.result)
    for index, entry in enumerate(result["images"]):
        ext = str(entry["path"]).rsplit(".", 1)[-1]
        entry["url"] = f"/jobs/{job.id}/outputs/{index}.{ext}"
    return result


@router.get("/jobs/{job_id}/outputs/{name}")
async def output_file(
    job_id: str, name: str, viewer: ViewerDep, services: ServicesDep
) -> StreamingResponse:
    job = await services.catalog.get(job_id, viewer)
    index_text = name.split(".", 1)[0]
    entries = output_entries(job)
    if not index_text.isdigit() or int(index_text) >= len(entries):
        raise NotFound(f"job {job_id} has no output {name}", field="name")
    entry = entries[int(index_text)]
    path = entry.get("path")
    if not isinstance(path, str) or not path.startswith("outputs/"):
        raise NotFound(f"job {job_id} has no output {name}", field="name")
    store = services.backends.blobs
    stat = await store.stat(path)
    if stat is None:
        raise NotFound(f"output {name} of job {job_id} is gone (past its retention)", field="name")
    media = str(entry.get("content_type") or "application/octet-stream")
    headers = {
        "Content-Length": str(stat.size),
        "Cache-Control": "private, max-age=3600",
        "Content-Disposition": f'inline; filename="{job_id[:8]}-{name}"',
    }
    return StreamingResponse(store.get(path), media_type=media, headers=headers)
