"""``flat_file`` rows (ADR-010): uploaded LoRAs, and who may see, use and change them.

The rules, in one place:
- a user sees and uses their own files and shared ones; an admin sees every file;
- another user's unshared file is reported as missing (404), word for word like a file that does
  not exist, so its existence does not leak;
- only the owner (or an admin) renames or deletes; only an admin shares;
- a deleted file is gone for everyone (the row stays with ``deleted_at`` set).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from emp_core.errors import NotFound
from emp_sql.auth import Forbidden, Principal
from emp_sql.models import FlatFile

LORA = "lora"


def not_found(file_id: str) -> NotFound:
    return NotFound(f"LoRA {file_id} does not exist", field="id")


class FlatFileRepository:
    """Flat files within one session (one transaction)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(
        self, *, owner_id: str, name: str, size: int, sha256: str, blob_path: str, kind: str = LORA
    ) -> FlatFile:
        row = FlatFile(
            owner_id=owner_id, name=name, kind=kind, size=size, sha256=sha256,
            blob_path=blob_path, shared=False,
        )  # fmt: skip
        self.session.add(row)
        await self.session.flush()
        await self.session.refresh(row)
        return row

    async def live_by_hash(self, owner_id: str, sha256: str, kind: str = LORA) -> FlatFile | None:
        result = await self.session.execute(
            select(FlatFile).where(
                FlatFile.owner_id == owner_id,
                FlatFile.kind == kind,
                FlatFile.sha256 == sha256,
                FlatFile.deleted_at.is_(None),
            )
        )
        return result.scalar_one_or_none()

    async def visible(self, file_id: str, principal: Principal, kind: str = LORA) -> FlatFile:
        """The live file if ``principal`` may see (and use) it; ``NotFound`` otherwise."""
        row = await self.session.get(FlatFile, file_id) if len(file_id) <= 32 else None
        if (
            row is None
            or row.kind != kind
            or row.deleted_at is not None
            or not (principal.is_admin or row.shared or row.owner_id == principal.user_id)
        ):
            raise not_found(file_id)
        return row

    async def owned(self, file_id: str, principal: Principal, kind: str = LORA) -> FlatFile:
        """The live file if ``principal`` may change it (owner or admin). A shared file of
        someone else is visible, so changing it is 403; an invisible one is 404."""
        row = await self.visible(file_id, principal, kind)
        if not principal.is_admin and row.owner_id != principal.user_id:
            raise Forbidden("only its owner or an admin may change this LoRA")
        return row

    async def list_visible(self, principal: Principal, kind: str = LORA) -> list[FlatFile]:
        """Own and shared files (every file for an admin), newest first."""
        query = select(FlatFile).where(FlatFile.kind == kind, FlatFile.deleted_at.is_(None))
        if not principal.is_admin:
            query = query.where(
                or_(FlatFile.owner_id == principal.user_id, FlatFile.shared.is_(True))
            )
        result = await self.session.execute(query.order_by(FlatFile.created_at.desc(), FlatFile.id))
        return list(result.scalars())

    async def rename(self, row: FlatFile, name: str) -> FlatFile:
        row.name = name
        await self.session.flush()
        return row

    async def set_shared(self, row: FlatFile, shared: bool) -> FlatFile:
        row.shared = shared
        await self.session.flush()
        return row

    async def mark_deleted(self, row: FlatFile) -> bool:
        """Mark the row deleted; False when another request did it first."""
        result = await self.session.execute(
            update(FlatFile)
            .where(FlatFile.id == row.id, FlatFile.deleted_at.is_(None))
            .values(deleted_at=datetime.now(UTC))
        )
        return bool(getattr(result, "rowcount", 0))
