"""``GET /blobs/{path}?exp=&sig=``: the local blob store's signed URLs (what a SAS is to Azure).

The signature is the credential: it names one blob and an expiry, HMAC-signed with
``EMP_BLOB_SIGNING_KEY`` (``emp_core.blobs.signing``). A single ``Range: bytes=a-b`` is honoured
(206), so a worker can resume a download. With the Azure store, URLs point at Azure and this
route answers 404.
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Header, Query
from fastapi.responses import Response, StreamingResponse

from emp_api.deps import ServicesDep
from emp_api.schemas import ERRORS
from emp_core.blobs import BlobNotFound, check_path, signing
from emp_core.blobs.local import LocalBlobStore

router = APIRouter(prefix="/blobs", tags=["blobs"], responses={**ERRORS})
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


@router.get("/{path:path}", summary="A blob, through a signed URL", response_class=Response)
async def signed_blob(
    path: str,
    services: ServicesDep,
    exp: Annotated[str, Query(max_length=20)],
    sig: Annotated[str, Query(max_length=128)],
    range_header: Annotated[str | None, Header(alias="Range", max_length=100)] = None,
) -> Response:
    store = services.backends.blobs
    if not isinstance(store, LocalBlobStore) or store.signing_key is None:
        raise BlobNotFound("this server does not serve blobs", field="path")
    check_path(path)
    signing.verify(store.signing_key, path, exp, sig)
    stat = await store.stat(path)
    if stat is None:
        raise BlobNotFound(f"no blob {path!r}", field="path")
    offset, length, status = 0, stat.size, 200
    headers = {"Accept-Ranges": "bytes", "Cache-Control": "private, no-store"}
    match = _RANGE.match(range_header or "")
    if match and (match.group(1) or match.group(2)):
        first, last = match.group(1), match.group(2)
        if first:
            offset = int(first)
            end = min(int(last), stat.size - 1) if last else stat.size - 1
        else:  # the last N bytes
            offset = max(stat.size - int(last), 0)
            end = stat.size - 1
        if offset >= stat.size or end < offset:
            return Response(status_code=416, headers={"Content-Range": f"bytes */{stat.size}"})
        length, status = end - offset + 1, 206
        headers["Content-Range"] = f"bytes {offset}-{end}/{stat.size}"
    headers["Content-Length"] = str(length)
    return StreamingResponse(
        store.get(path, offset=offset, length=length),
        status_code=status,
        media_type="application/octet-stream",
        headers=headers,
    )
