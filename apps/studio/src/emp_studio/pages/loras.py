"""The LoRAs page (ADR-010): upload with a progress bar, the list with size and hash, rename,
share (admins) and delete with a confirmation.

The upload streams (``emp_web.uploads``): the browser's ``XMLHttpRequest`` reports progress and
sends the CSRF token in a header; without script the form posts as usual and its CSRF field,
placed before the file, is read before the file's first byte. Every change goes through
``LoraLibrary``, which holds the rules of who may do what.
"""

from __future__ import annotations

import logging
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response

from emp_core.errors import EmpError, InvalidInput
from emp_sql.users import UserRepository
from emp_studio.deps import ServicesDep, ViewerDep, verify_csrf
from emp_studio.render import page, redirect
from emp_studio.session import CSRF_FIELD, CSRF_HEADER, check_csrf
from emp_web.uploads import StreamedUpload

logger = logging.getLogger(__name__)

router = APIRouter(dependencies=[Depends(verify_csrf)])
# The upload reads its own body as a stream, so it checks the CSRF token itself (verify_csrf
# would parse, and so spool, the whole form first).
uploads = APIRouter()

UPLOAD_PATH = "/loras/upload"
Notice = Annotated[str, Query(max_length=300)]


@router.get("/loras")
async def loras_page(
    request: Request, viewer: ViewerDep, services: ServicesDep, notice: Notice = ""
) -> Response:
    rows = await services.loras.list_visible(viewer)
    owners: dict[str, str] = {}
    if viewer.is_admin:
        async with services.database.session() as db:
            owners = {u.id: u.email for u in await UserRepository(db).list_all()}
    context = {
        "nav": "loras",
        "loras": rows,
        "owners": owners,
        "notice": notice,
        "max_bytes": services.loras.settings.max_bytes,
    }
    return page(request, "loras.html", context)


def _wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


@uploads.post(UPLOAD_PATH)
async def upload_lora(request: Request, viewer: ViewerDep, services: ServicesDep) -> Response:
    try:
        upload = await StreamedUpload.open_lora(request, services.loras.settings)
        check_csrf(
            request.session, request.headers.get(CSRF_HEADER) or upload.fields.get(CSRF_FIELD)
        )
        name = upload.fields.get("name", "").strip() or upload.filename or ""
        result = await services.loras.upload(viewer, name, upload.chunks())
    except EmpError as exc:
        if not _wants_json(request):
            raise
        return JSONResponse({"error": exc.to_dict()}, status_code=exc.status_code)
    row = result.file
    said = "was already uploaded as" if result.duplicate else "uploaded as"
    message = f"The file {said} “{row.name}”."
    logger.info("user %s uploaded LoRA %s (%s bytes)", viewer.email, row.id, row.size)
    if _wants_json(request):
        body = {
            "id": row.id, "name": row.name, "size": row.size, "sha256": row.sha256,
            "duplicate": result.duplicate, "message": message,
        }  # fmt: skip
        return JSONResponse(body, status_code=200 if result.duplicate else 201)
    return redirect(request, f"/loras?{urlencode({'notice': message})}")


@router.post("/loras/{lora_id}/rename")
async def rename_lora(
    request: Request, lora_id: str, viewer: ViewerDep, services: ServicesDep
) -> Response:
    name = (await request.form()).get("name")
    if not isinstance(name, str):
        raise InvalidInput("a LoRA needs a name", field="name")
    row = await services.loras.rename(lora_id, viewer, name)
    return redirect(request, f"/loras?{urlencode({'notice': f'Renamed to “{row.name}”.'})}")


@router.post("/loras/{lora_id}/share")
async def share_lora(
    request: Request, lora_id: str, viewer: ViewerDep, services: ServicesDep
) -> Response:
    shared = (await request.form()).get("shared") == "true"
    row = await services.loras.share(lora_id, viewer, shared)
    said = "now shared with everyone" if row.shared else "no longer shared"
    return redirect(request, f"/loras?{urlencode({'notice': f'“{row.name}” is {said}.'})}")


@router.get("/loras/{lora_id}/delete")
async def confirm_delete(
    request: Request, lora_id: str, viewer: ViewerDep, services: ServicesDep
) -> Response:
    row = await services.loras.get(lora_id, viewer)
    return page(request, "lora_delete.html", {"nav": "loras", "lora": row})


@router.post("/loras/{lora_id}/delete")
async def delete_lora(
    request: Request, lora_id: str, viewer: ViewerDep, services: ServicesDep
) -> Response:
    row = await services.loras.delete(lora_id, viewer)
    logger.info("user %s deleted LoRA %s", viewer.email, row.id)
    return redirect(request, f"/loras?{urlencode({'notice': f'Deleted “{row.name}”.'})}")
