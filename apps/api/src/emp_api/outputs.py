"""Fresh download URLs for a job's outputs, made when the job is read.

A worker lists each output file with its blob path and a signed URL that expires (an hour), so a
job read later would hand out dead links. Reading a job through the API signs each output's path
again (no I/O for the local store's HMAC URLs; a SAS for Azure is computed locally too), so the URL
in the answer always works for ``OUTPUT_URL_TTL_S`` from the read.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from emp_core.blobs import BlobStore
from emp_core.errors import EmpError
from emp_core.jobs.job import Job

logger = logging.getLogger(__name__)

OUTPUT_URL_TTL_S = 3600


async def with_fresh_urls(job: Job, store: BlobStore) -> Job:
    """The job with each output's ``url`` signed afresh (outputs are ``result.images[*]`` with
    a ``path`` under ``outputs/``)."""
    result: Any = job.result
    images = result.get("images") if isinstance(result, dict) else None
    if not isinstance(images, list) or not any(_is_output(i) for i in images):
        return job
    fresh = copy.deepcopy(result)
    for entry in fresh["images"]:
        if not _is_output(entry):
            continue
        try:
            entry["url"] = await store.signed_url(entry["path"], ttl_s=OUTPUT_URL_TTL_S)
        except EmpError as exc:  # a store that cannot sign: no URL rather than a dead one
            logger.debug("no URL for %s: %s", entry["path"], exc)
            entry.pop("url", None)
    return job.model_copy(update={"result": fresh})


def _is_output(entry: Any) -> bool:
    return isinstance(entry, dict) and str(entry.get("path", "")).startswith("outputs/")
