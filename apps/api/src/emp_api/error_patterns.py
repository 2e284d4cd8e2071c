"""``/api/error-patterns``: admins read, create, change, delete and test the error patterns
(ADR-009), and read their match statistics. Every change is live on workers within seconds."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from emp_api.deps import AdminDep, ServicesDep
from emp_api.schemas import ERRORS, ErrorResponse
from emp_core.patterns import CONNECTORS, Category, MatchKind, PatternSpec
from emp_core.patterns.counts import unmatched
from emp_core.patterns.rules import MAX_MESSAGE_CHARS
from emp_sql.error_patterns import PatternFilter, as_dict
from emp_sql.models import ErrorPattern

router = APIRouter(
    prefix="/api/error-patterns",
    tags=["error patterns"],
    responses={
        **ERRORS,
        403: {"model": ErrorResponse, "description": "Not an admin"},
        409: {"model": ErrorResponse, "description": "Stale version: someone saved first"},
    },
)


class PatternOut(PatternSpec):
    # The output shape repeats the input's fields; validation on output is not wanted.
    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str
    version: int
    updated_by: str
    updated_at: datetime | None = None

    @classmethod
    def of(cls, row: ErrorPattern) -> PatternOut:
        # Built without validation: the row was validated when saved.
        fields = as_dict(row)
        fields.update(
            updated_at=row.updated_at,
            match_kind=MatchKind(row.match_kind),
            category=Category(row.category),
        )
        return cls.model_construct(**fields)


class PatternUpdate(PatternSpec):
    version: int = Field(ge=1, description="The version you read; a stale one gets 409.")


class TestIn(BaseModel):
    message: str = Field(min_length=1, max_length=20_000)
    connector: str | None = None
    http_status: int | None = Field(default=None, ge=100, le=599)
    candidate: dict[str, Any] | None = Field(
        default=None, description="An unsaved pattern to try as if it were saved."
    )


class TestOut(BaseModel):
    category: Category
    retryable: bool
    retry_delay_s: float | None
    user_message: str
    pattern_id: str | None
    pattern_name: str | None
    by_candidate: bool
    message_chars_matched: int


class DayStat(BaseModel):
    day: date
    matches: int


class PatternStats(BaseModel):
    pattern_id: str
    name: str
    total: int
    last_matched_at: datetime | None
    days: list[DayStat]


class UnmatchedOut(BaseModel):
    message: str
    count: int


class StatsOut(BaseModel):
    patterns: list[PatternStats]
    unmatched: list[UnmatchedOut]


def _split(body: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    fields = dict(body)
    return fields, fields.pop("version", None)


@router.get("", summary="List error patterns")
async def list_patterns(
    _admin: AdminDep,
    services: ServicesDep,
    connector: Annotated[str | None, Query(description="`global` for unscoped ones")] = None,
    category: Category | None = None,
    enabled: bool | None = None,
) -> list[PatternOut]:
    where = PatternFilter(
        connector="" if connector == "global" else connector,
        category=category.value if category else None,
        enabled=enabled,
    )
    return [PatternOut.of(r) for r in await services.patterns.find(where)]


@router.post("", status_code=201, summary="Create an error pattern")
async def create_pattern(
    admin: AdminDep, services: ServicesDep, body: Annotated[dict[str, Any], Body()]
) -> PatternOut:
    """The body is a pattern (see `PatternSpec`); 422 names the first bad field."""
    row = await services.patterns.create(body, by=admin.email)
    return PatternOut.of(row)


@router.post("/test", summary="Classify a message as workers would")
async def test_pattern(admin: AdminDep, services: ServicesDep, body: TestIn) -> TestOut:
    candidate = None if body.candidate is None else PatternSpec.parse(body.candidate)
    connector = body.connector if body.connector in CONNECTORS else None
    outcome, by_candidate = await services.patterns.test(
        body.message, connector=connector, http_status=body.http_status, candidate=candidate
    )
    return TestOut(
        category=outcome.category, retryable=outcome.retryable, retry_delay_s=outcome.delay_s,
        user_message=outcome.user_message,
        pattern_id=None if by_candidate else outcome.pattern_id,
        pattern_name=outcome.pattern_name, by_candidate=by_candidate,
        message_chars_matched=min(len(body.message), MAX_MESSAGE_CHARS),
    )  # fmt: skip


@router.get("/stats", summary="Matches per pattern per day, and frequent unmatched messages")
async def pattern_stats(
    _admin: AdminDep, services: ServicesDep, days: Annotated[int, Query(ge=1, le=90)] = 14
) -> StatsOut:
    rows = await services.patterns.find()
    daily, totals = await services.patterns.stats(days=days)
    return StatsOut(
        patterns=[
            PatternStats(
                pattern_id=r.id,
                name=r.name,
                total=totals.get(r.id, (0, None))[0],
                last_matched_at=totals.get(r.id, (0, None))[1],
                days=[DayStat(day=d, matches=n) for d, n in sorted(daily.get(r.id, {}).items())],
            )
            for r in rows
        ],
        unmatched=[
            UnmatchedOut(message=m, count=n)
            for m, n in await unmatched(services.redis, services.queue.keys, days=days)
        ],
    )


@router.get("/{pattern_id}", summary="Read an error pattern")
async def get_pattern(pattern_id: str, _admin: AdminDep, services: ServicesDep) -> PatternOut:
    return PatternOut.of(await services.patterns.get(pattern_id))


@router.put("/{pattern_id}", summary="Change an error pattern")
async def update_pattern(
    pattern_id: str, admin: AdminDep, services: ServicesDep,
    body: Annotated[dict[str, Any], Body(description="A pattern and the `version` you read.")],
) -> PatternOut:  # fmt: skip
    fields, version = _split(body)
    row = await services.patterns.update(pattern_id, fields, version=version, by=admin.email)
    return PatternOut.of(row)


@router.delete("/{pattern_id}", status_code=204, summary="Delete an error pattern")
async def delete_pattern(
    pattern_id: str, admin: AdminDep, services: ServicesDep,
    version: Annotated[int | None, Query(ge=1)] = None,
) -> Response:  # fmt: skip
    await services.patterns.delete(pattern_id, version=version, by=admin.email)
    return Response(status_code=204)


@router.get("/{pattern_id}/history", summary="Who changed a pattern, when, before and after")
async def pattern_history(
    pattern_id: str, _admin: AdminDep, services: ServicesDep
) -> list[dict[str, Any]]:
    return [
        {
            "id": c.id,
            "action": c.action,
            "changed_by": c.changed_by,
            "changed_at": c.changed_at,
            "before": c.before,
            "after": c.after,
        }
        for c in await services.patterns.history(pattern_id)
    ]
