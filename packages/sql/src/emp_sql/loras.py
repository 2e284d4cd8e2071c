"""The LoRA library (ADR-010): upload, list, rename, share, delete, and resolve for a job.

An upload streams: each chunk goes through the safetensors check (``emp_core.loras.safetensors``)
into the blob store at ``users/{owner}/loras/{random}.safetensors``; the store commits the blob
only when the stream ends and the check has passed, so a bad or cut-off upload leaves nothing.
Then the row is written. The same bytes uploaded twice by one owner keep one blob and one row:
the second upload's blob is removed and the first row is answered (``duplicate=True``).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterable
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy.exc import IntegrityError

from emp_core.blobs.store import BlobStore
from emp_core.errors import InvalidInput, NotFound
from emp_core.jobs.job import JobSpec
from emp_core.jobs.loras import MAX_LORAS, WEIGHT_LIMIT, LoraRef
from emp_core.loras.names import check_name
from emp_core.loras.safetensors import SafetensorsCheck, checked
from emp_core.loras.settings import LoraSettings
from emp_sql.auth import Principal
from emp_sql.flat_files import FlatFileRepository
from emp_sql.models import FlatFile
from emp_sql.session import Database

logger = logging.getLogger(__name__)


class LoraUse(BaseModel):
    """A LoRA as a submitter names it in a job: its id and the weight to apply it with."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
    weight: Annotated[float, Field(ge=-WEIGHT_LIMIT, le=WEIGHT_LIMIT, allow_inf_nan=False)] = 1.0


class JobRequest(JobSpec):
    """A job as a client submits it: like ``JobSpec``, but LoRAs are named by id and weight;
    ``LoraLibrary.resolve`` turns them into the ``LoraRef``s the job stores."""

    loras: Annotated[list[LoraUse], Field(max_length=MAX_LORAS)] = Field(  # type: ignore[assignment]
        default_factory=list
    )

    @field_validator("loras")
    @classmethod
    def _unique_loras(cls, value: list[LoraUse]) -> list[LoraUse]:  # type: ignore[override]
        seen: set[str] = set()
        for use in value:
            if use.id in seen:
                raise ValueError(f"LoRA {use.id} is named twice")
            seen.add(use.id)
        return value

    @classmethod
    def parse_request(cls, data: Any, *, max_payload_bytes: int) -> JobRequest:
        """Validate untrusted input; ``InvalidInput`` naming the first bad field."""
        request = cls.parse(data, max_payload_bytes=max_payload_bytes)
        assert isinstance(request, JobRequest)
        return request

    def to_spec(self, loras: list[LoraRef]) -> JobSpec:
        fields = {name: getattr(self, name) for name in JobSpec.model_fields if name != "loras"}
        return JobSpec(**fields, loras=loras)


@dataclass(frozen=True, slots=True)
class Uploaded:
    file: FlatFile
    duplicate: bool


def blob_path(owner_id: str) -> str:
    return f"users/{owner_id}/loras/{uuid.uuid4().hex}.safetensors"


class LoraLibrary:
    def __init__(
        self, database: Database, store: BlobStore, settings: LoraSettings | None = None
    ) -> None:
        self.database = database
        self.store = store
        self.settings = settings or LoraSettings()

    async def upload(self, owner: Principal, name: str, chunks: AsyncIterable[bytes]) -> Uploaded:
        """Store ``chunks`` as ``owner``'s LoRA called ``name``; refuse anything that is not a
        LoRA with ``InvalidInput`` naming the problem, leaving nothing behind."""
        name = check_name(name)
        check = SafetensorsCheck(
            max_bytes=self.settings.max_bytes, max_header_bytes=self.settings.max_header_bytes
        )
        path = blob_path(owner.user_id)
        await self.store.put(path, checked(chunks, check), overwrite=False)
        info = check.finish()
        try:
            async with self.database.session() as db:
                repo = FlatFileRepository(db)
                existing = await repo.live_by_hash(owner.user_id, info.sha256)
                if existing is None:
                    row = await repo.add(
                        owner_id=owner.user_id, name=name, size=info.size, sha256=info.sha256,
                        blob_path=path,
                    )  # fmt: skip
                    return Uploaded(row, duplicate=False)
        except IntegrityError:  # the same bytes landed in a concurrent upload: answer that one
            async with self.database.session() as db:
                existing = await FlatFileRepository(db).live_by_hash(owner.user_id, info.sha256)
            if existing is None:
                await self.store.delete(path)
                raise
        except BaseException:
            await self.store.delete(path)
            raise
        await self.store.delete(path)
        return Uploaded(existing, duplicate=True)

    async def list_visible(self, principal: Principal) -> list[FlatFile]:
        async with self.database.session() as db:
            return await FlatFileRepository(db).list_visible(principal)

    async def get(self, file_id: str, principal: Principal) -> FlatFile:
        async with self.database.session() as db:
            return await FlatFileRepository(db).visible(file_id, principal)

    async def rename(self, file_id: str, principal: Principal, name: str) -> FlatFile:
        name = check_name(name)
        async with self.database.session() as db:
            repo = FlatFileRepository(db)
            return await repo.rename(await repo.owned(file_id, principal), name)

    async def share(self, file_id: str, principal: Principal, shared: bool) -> FlatFile:
        principal.require_admin()
        async with self.database.session() as db:
            repo = FlatFileRepository(db)
            return await repo.set_shared(await repo.visible(file_id, principal), shared)

    async def delete(self, file_id: str, principal: Principal) -> FlatFile:
        """Mark the row deleted, then remove the blob: its download URLs, including those in
        queued jobs, stop working (those jobs fail naming the LoRA)."""
        async with self.database.session() as db:
            repo = FlatFileRepository(db)
            row = await repo.owned(file_id, principal)
            await repo.mark_deleted(row)
        try:
            await self.store.delete(row.blob_path)
        except Exception:  # the row is gone; an orphan blob is harmless and logged for cleanup
            logger.exception("could not delete blob %s of LoRA %s", row.blob_path, row.id)
        return row

    async def download_url(self, file_id: str, principal: Principal, *, ttl_s: int) -> str:
        row = await self.get(file_id, principal)
        return await self.store.signed_url(row.blob_path, ttl_s=ttl_s)

    async def resolve(self, principal: Principal, uses: list[LoraUse]) -> list[LoraRef]:
        """The job's LoRAs as the worker needs them: each checked usable by ``principal`` (own
        or shared, else 404 as for a missing one), with hash, size, scope and a signed URL."""
        if not uses:
            return []  # most jobs: no database session (a thread hop on SQLite) for nothing
        if len(uses) > MAX_LORAS:
            raise InvalidInput(f"a job may use at most {MAX_LORAS} LoRAs", field="loras")
        seen: set[str] = set()
        refs: list[tuple[FlatFile, float]] = []
        async with self.database.session() as db:
            repo = FlatFileRepository(db)
            for i, use in enumerate(uses):
                if use.id in seen:
                    raise InvalidInput(f"LoRA {use.id} is named twice", field=f"loras.{i}.id")
                seen.add(use.id)
                try:
                    row = await repo.visible(use.id, principal)
                except NotFound as exc:
                    raise NotFound(exc.message, field=f"loras.{i}.id") from None
                refs.append((row, use.weight))
        return [
            LoraRef(
                id=row.id,
                name=row.name,
                sha256=row.sha256,
                size=row.size,
                scope="shared" if row.shared else "user",
                url=await self.store.signed_url(row.blob_path, ttl_s=self.settings.url_ttl_seconds),
                weight=weight,
            )
            for row, weight in refs
        ]
