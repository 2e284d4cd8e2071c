"""Error patterns on the worker: a running worker classifies its next failure with a pattern
published seconds before (no restart), the classification drives retry and is stored with the
job, matches are counted in Redis, and no SQL runs anywhere on the job path."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine
from worker_helpers import eventually, make_worker_settings

from emp_core.jobs.job import JobStatus
from emp_core.patterns import Category, MatchKind, PatternRule, Snapshot
from emp_core.patterns.store import publish_snapshot
from emp_core.queue.queue import Queue
from emp_worker.worker import Worker


@pytest.fixture
def sql_statements() -> Iterator[list[str]]:
    """Every SQL statement any engine in this process runs while the test does."""
    seen: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    event.listen(Engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(Engine, "before_cursor_execute", count)


def _rule(**overrides: Any) -> PatternRule:
    fields: dict[str, Any] = {
        "id": "pat-nsfw", "name": "policy", "match_kind": MatchKind.SUBSTRING,
        "pattern": "flagged by policy", "category": Category.CONTENT_REFUSED, "retryable": False,
        "user_message": "Please change the prompt.", "connector": "simulation",
    }  # fmt: skip
    return PatternRule(**{**fields, **overrides})


async def _status(queue: Queue, job_id: str, *wanted: JobStatus) -> bool:
    return (await queue.get(job_id)).status in wanted


async def test_running_worker_uses_a_pattern_published_seconds_before(
    redis: Any, queue: Queue, settings: Any, sql_statements: list[str]
) -> None:
    worker = Worker(make_worker_settings(settings, burst=False), redis=redis)
    run = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(worker.ready.wait(), 10)
        assert worker.patterns is not None
        assert worker.patterns.snapshot.source == "starter"

        await publish_snapshot(redis, queue.keys, Snapshot.build(1, [_rule()]))
        await eventually(lambda: _version_is(worker, 1), within=5)

        job_id = await queue.submit({
            "service": "simulation", "max_attempts": 3,
            "payload": {"steps": 1, "fail_with": "the prompt was flagged by policy"},
        })  # fmt: skip
        await eventually(lambda: _status(queue, job_id, JobStatus.FAILED), within=10)
        job = await queue.get(job_id)
        # Not retryable: failed at the first attempt although two more were allowed.
        assert job.attempts == 1
        assert (job.error_category, job.error_pattern_id, job.error_user_message) == (
            "content_refused", "pat-nsfw", "Please change the prompt.",
        )  # fmt: skip
        day = datetime.now(UTC).date().isoformat()
        counts = await redis.hgetall(queue.keys.pattern_matches(day))
        assert counts[b"c|pat-nsfw|simulation"] == b"1"
    finally:
        worker.stop()
        await asyncio.wait_for(run, 10)
    assert sql_statements == []  # classifying and counting touched no database


async def test_retryable_pattern_retries_with_its_delay(
    redis: Any, queue: Queue, settings: Any
) -> None:
    await publish_snapshot(
        redis, queue.keys,
        Snapshot.build(2, [_rule(retryable=True, retry_delay_s=30, category=Category.TIMEOUT)]),
    )  # fmt: skip
    job_id = await queue.submit({
        "service": "simulation", "max_attempts": 3,
        "payload": {"steps": 1, "fail_with": "flagged by policy"},
    })  # fmt: skip
    # Not a burst worker: that one would wait out the retry to drain the queue.
    worker = Worker(make_worker_settings(settings, burst=False), redis=redis)
    run = asyncio.create_task(worker.run())
    try:
        await eventually(lambda: _status(queue, job_id, JobStatus.RETRYING), within=10)
    finally:
        worker.stop()
        await asyncio.wait_for(run, 10)
    job = await queue.get(job_id)
    assert job.status is JobStatus.RETRYING
    assert job.error_category == "timeout"
    assert job.retry_at is not None
    wait = (job.retry_at - datetime.now(UTC)).total_seconds()
    assert 25 < wait <= 30  # the pattern's delay, not the test's 10 ms backoff


async def test_unmatched_failure_gets_the_default_and_is_listed(
    redis: Any, queue: Queue, settings: Any
) -> None:
    job_id = await queue.submit({
        "service": "simulation", "max_attempts": 1,
        "payload": {"steps": 1, "fail_with": "a brand new kind of failure"},
    })  # fmt: skip
    await Worker(make_worker_settings(settings), redis=redis).run()
    job = await queue.get(job_id)
    assert (job.error_category, job.error_pattern_id) == ("unknown", None)
    assert job.error_user_message
    day = datetime.now(UTC).date().isoformat()
    assert await redis.zscore(queue.keys.pattern_unmatched(day), "a brand new kind of failure")


async def _version_is(worker: Worker, version: int) -> bool:
    return worker.patterns is not None and worker.patterns.version == version
