"""``/api/loras``: upload (multipart, streamed), list, read, rename, share, delete and download
the caller's LoRAs (ADR-010). A user sees their own and shared ones; another user's is 404."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, ConfigDict, Field

from emp_api.deps import PrincipalDep, ServicesDep
from emp_api.schemas import ERRORS
from emp_core.errors import InvalidInput
from emp_sql.auth import Principal
from emp_sql.models import FlatFile
from emp_web.uploads import StreamedUpload

router = APIRouter(prefix="/api/loras", tags=["loras"], responses={**ERRORS})

LoraId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="A LoRA id.")]
# Room for the multipart boundaries and headers around the file.
DOWNLOAD_TTL_S = 600

_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "name": {"type": "string", "description": "Defaults to the file name."},
                        "file": {"type": "string", "format": "binary"},
                    },
                }
            }
        },
    }
}


class LoraOut(BaseModel):
    id: str
    name: str
    kind: str
    size: int = Field(description="Bytes.")
    sha256: str
    shared: bool
    owner_id: str
    mine: bool = Field(description="Whether the caller uploaded it.")
    created_at: datetime

    @classmethod
    def of(cls, row: FlatFile, principal: Principal) -> LoraOut:
        return cls(
            id=row.id, name=row.name, kind=row.kind, size=row.size, sha256=row.sha256,
            shared=row.shared, owner_id=row.owner_id, mine=row.owner_id == principal.user_id,
            created_at=row.created_at,
        )  # fmt: skip


class UploadOut(LoraOut):
    duplicate: bool = Field(
        description="True when the caller had uploaded these bytes before: that LoRA is answered."
    )


class LoraList(BaseModel):
    loras: list[LoraOut]


class LoraChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, description="A new name (owner or admin).")
    shared: bool | None = Field(default=None, description="Share with every user (admins only).")


@router.post(
    "", status_code=201, summary="Upload a LoRA (.safetensors)", openapi_extra=_UPLOAD_BODY
)
async def upload_lora(
    request: Request,
    response: Response,
    principal: PrincipalDep,
    services: ServicesDep,
    name: Annotated[str | None, Query(max_length=1024)] = None,
) -> UploadOut:
    """Send `multipart/form-data` with a `file` part (and optionally `name` before it). The file
    streams to storage while it is checked to be a safetensors LoRA and hashed; anything else is
    refused with 422 naming the problem, and nothing is kept. The same bytes twice answer the
    first upload with `duplicate: true` (200)."""
    upload = await StreamedUpload.open_lora(request, services.loras.settings)
    chosen = name if name is not None else upload.fields.get("name") or upload.filename or ""
    result = await services.loras.upload(principal, chosen, upload.chunks())
    if result.duplicate:
        response.status_code = 200
    out = LoraOut.of(result.file, principal)
    return UploadOut(**out.model_dump(), duplicate=result.duplicate)


@router.get("", summary="List the LoRAs the caller may use")
async def list_loras(principal: PrincipalDep, services: ServicesDep) -> LoraList:
    """The caller's own LoRAs and shared ones (an admin: every LoRA), newest first."""
    rows = await services.loras.list_visible(principal)
    return LoraList(loras=[LoraOut.of(row, principal) for row in rows])


@router.get("/{lora_id}", summary="Read a LoRA")
async def get_lora(lora_id: LoraId, principal: PrincipalDep, services: ServicesDep) -> LoraOut:
    return LoraOut.of(await services.loras.get(lora_id, principal), principal)


@router.patch("/{lora_id}", summary="Rename a LoRA, or share it (admins)")
async def change_lora(
    lora_id: LoraId, change: LoraChange, principal: PrincipalDep, services: ServicesDep
) -> LoraOut:
    if change.name is None and change.shared is None:
        raise InvalidInput("send name or shared", field="name")
    if change.shared is not None:
        principal.require_admin()
    row = await services.loras.get(lora_id, principal)
    if change.name is not None:
        row = await services.loras.rename(lora_id, principal, change.name)
    if change.shared is not None:
        row = await services.loras.share(lora_id, principal, change.shared)
    return LoraOut.of(row, principal)


@router.delete("/{lora_id}", status_code=204, summary="Delete a LoRA (owner or admin)")
async def delete_lora(lora_id: LoraId, principal: PrincipalDep, services: ServicesDep) -> Response:
    """Queued jobs that name it fail when their worker finds the file gone."""
    await services.loras.delete(lora_id, principal)
    return Response(status_code=204)


@router.get(
    "/{lora_id}/download",
    summary="Download a LoRA",
    status_code=307,
    response_class=RedirectResponse,
    responses={307: {"description": "To a signed URL valid for 10 minutes."}},
)
async def download_lora(
    lora_id: LoraId, principal: PrincipalDep, services: ServicesDep
) -> RedirectResponse:
    url = await services.loras.download_url(lora_id, principal, ttl_s=DOWNLOAD_TTL_S)
    return RedirectResponse(url, status_code=307)
