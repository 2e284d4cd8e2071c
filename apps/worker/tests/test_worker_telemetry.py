"""ADR-003 in the worker: a job's claim and run spans join the submitter's trace, and the job
metrics count what the worker did."""

from __future__ import annotations

from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from worker_helpers import make_worker_settings, queue_backoff

from emp_core.queue.queue import Queue
from emp_core.telemetry import current_traceparent, setup_telemetry
from emp_worker.worker import Worker


def _metric_points(reader: InMemoryMetricReader) -> dict[str, float]:
    """Sum of every data point per metric name."""
    data = reader.get_metrics_data()
    totals: dict[str, float] = {}
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    value = getattr(point, "value", None)
                    if value is None:
                        value = getattr(point, "count", 0)
                    totals[metric.name] = totals.get(metric.name, 0) + value
    return totals


async def test_worker_spans_join_the_submitters_trace(redis, queue: Queue, settings):
    spans, reader = InMemorySpanExporter(), InMemoryMetricReader()
    submitter = setup_telemetry("emp-api", span_exporters=[spans], install=False)
    with submitter.tracer().start_as_current_span("job.submit", kind=SpanKind.PRODUCER) as span:
        trace_id = span.get_span_context().trace_id
        ok = await queue.submit({"service": "simulation"}, traceparent=current_traceparent())
    failing = await queue.submit(
        {"service": "simulation", "max_attempts": 1, "payload": {"fail_with": "boom"}}
    )
    worker_telemetry = setup_telemetry(
        "emp-worker", span_exporters=[spans], metric_readers=[reader], install=False
    )
    worker = Worker(
        make_worker_settings(settings), redis=redis, classifier=queue_backoff,
        telemetry=worker_telemetry,
    )  # fmt: skip

    await worker.run()

    by_job: dict[str, list[str]] = {}
    for s in spans.get_finished_spans():
        job_id = (s.attributes or {}).get("emp.job.id")
        if s.name.startswith("job.") and job_id:
            assert s.context is not None
            by_job.setdefault(str(job_id), []).append(s.name)
            if job_id == ok:
                assert s.context.trace_id == trace_id, s.name
    assert sorted(by_job[ok]) == ["job.claim", "job.run"]
    assert sorted(by_job[failing]) == ["job.claim", "job.run"]  # a trace of its own
    totals = _metric_points(reader)
    assert totals["emp.jobs.claimed"] == 2
    assert totals["emp.jobs.completed"] == 1
    assert totals["emp.jobs.failed"] == 1
    assert totals["service.heartbeat"] == 1
