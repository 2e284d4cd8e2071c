"""Telemetry (ADR-003): the heartbeat and its attributes, its interval, job metrics, one trace
from submit to worker across the queue's ``traceparent``, and OTLP/HTTP over a real socket."""

from __future__ import annotations

import asyncio
import contextvars
import gzip
import itertools
import os
import threading
import time
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import redis.asyncio as aioredis
from opentelemetry import metrics, trace
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.metrics.export import (
    InMemoryMetricReader,
    MetricExporter,
    MetricExportResult,
    MetricsData,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from emp_core.jobs.capabilities import WorkerCapabilities
from emp_core.queue.queue import Queue
from emp_core.telemetry import (
    DEFAULT_HEARTBEAT_SECONDS,
    HEARTBEAT,
    Telemetry,
    current_traceparent,
    heartbeat_interval,
    job_span,
    setup_telemetry,
)


@pytest.fixture(autouse=True)
def _no_otel_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test states the OTEL_* variables it wants; none leak in from the shell."""
    for name in list(os.environ):
        if name.startswith("OTEL_") or name == "EMP_ENVIRONMENT":
            monkeypatch.delenv(name)


def _points(data: MetricsData | None, name: str) -> list[Any]:
    assert data is not None
    return [
        point
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
        if metric.name == name
        for point in metric.data.data_points
    ]


def _setup(**kwargs: Any) -> Telemetry:
    kwargs.setdefault("install", False)  # the global providers can be set once per process
    return setup_telemetry(**kwargs)


# --- the heartbeat -------------------------------------------------------------------------------
def test_heartbeat_carries_the_service_and_instance() -> None:
    reader = InMemoryMetricReader()
    tel = _setup(
        service_name="emp-worker",
        instance_id="m1-simulation-0",
        machine_id="m1",
        environment="test",
        metric_readers=[reader],
    )
    try:
        data = reader.get_metrics_data()
        (point,) = _points(data, HEARTBEAT)
        assert point.value == 1
        assert dict(point.attributes) == {
            "service.name": "emp-worker",
            "service.instance.id": "m1-simulation-0",
        }
        assert data is not None
        resource = dict(data.resource_metrics[0].resource.attributes)
        assert resource["service.name"] == "emp-worker"
        assert resource["service.version"] == "0.1.0"
        assert resource["service.instance.id"] == "m1-simulation-0"
        assert resource["deployment.environment"] == "test"
        assert resource["machine.id"] == "m1"
    finally:
        tel.shutdown()


def test_no_machine_id_no_attribute_and_a_generated_instance_id() -> None:
    reader = InMemoryMetricReader()
    tel = _setup(service_name="emp-api", metric_readers=[reader])
    try:
        data = reader.get_metrics_data()
        assert data is not None
        resource = dict(data.resource_metrics[0].resource.attributes)
        assert "machine.id" not in resource
        assert len(str(resource["service.instance.id"])) == 36  # a uuid4
        assert resource["deployment.environment"] == "development"
    finally:
        tel.shutdown()


class _ListExporter(MetricExporter):
    """Keeps each export with the time it arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.exports: list[tuple[float, MetricsData]] = []

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        self.exports.append((time.monotonic(), metrics_data))
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        pass


def test_heartbeat_is_exported_at_the_configured_interval() -> None:
    exporter = _ListExporter()
    tel = _setup(service_name="emp-machine", heartbeat_interval_s=0.1, metric_exporters=[exporter])
    try:
        deadline = time.monotonic() + 5
        while len(exporter.exports) < 5 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        tel.shutdown()
    beats = [(t, d) for t, d in exporter.exports if _points(d, HEARTBEAT)]
    assert len(beats) >= 5
    gaps = sorted(b[0] - a[0] for a, b in itertools.pairwise(beats[:5]))
    assert gaps[0] > 0.05, gaps  # never faster than configured
    assert gaps[len(gaps) // 2] < 0.3, gaps  # and about as often (a loaded machine may lag)


def test_interval_default_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert heartbeat_interval() == DEFAULT_HEARTBEAT_SECONDS == 15
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "2500")
    assert heartbeat_interval() == 2.5
    assert heartbeat_interval(0.5) == 0.5  # the caller's wins
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "soon")
    assert heartbeat_interval() == 15


def test_off_unless_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    threads = threading.active_count()
    tel = _setup(service_name="emp-studio")
    assert not tel.exporting
    assert isinstance(tel.meter_provider, metrics.NoOpMeterProvider)
    assert isinstance(tel.tracer_provider, trace.NoOpTracerProvider)
    assert threading.active_count() == threads  # no export thread
    with tel.tracer().start_as_current_span("x"):
        assert current_traceparent() == ""  # nothing recorded: nothing to propagate
    tel.jobs.submitted("simulation")  # the helpers work, and do nothing

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert not _setup(service_name="emp-studio").exporting
    monkeypatch.delenv("OTEL_SDK_DISABLED")
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "none")
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    assert not _setup(service_name="emp-studio").exporting


def test_standard_variables_relabel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "emp-worker-canary")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=staging,team=gpu")
    reader = InMemoryMetricReader()
    tel = _setup(service_name="emp-worker", metric_readers=[reader])
    try:
        data = reader.get_metrics_data()
        assert data is not None
        resource = dict(data.resource_metrics[0].resource.attributes)
        assert resource["service.name"] == "emp-worker-canary"
        assert resource["deployment.environment"] == "staging"
        assert resource["team"] == "gpu"
        (point,) = _points(data, HEARTBEAT)
        assert point.attributes["service.name"] == "emp-worker-canary"
    finally:
        tel.shutdown()


# --- job metrics ---------------------------------------------------------------------------------
def test_job_metrics() -> None:
    reader = InMemoryMetricReader()
    tel = _setup(service_name="emp-worker", metric_readers=[reader])
    try:
        jobs = tel.jobs
        jobs.submitted("simulation", 3)
        jobs.claimed("simulation", queue_wait_s=0.25)
        jobs.completed("simulation", duration_s=1.5)
        jobs.failed("simulation", duration_s=0.5, category="oom", retrying=True)
        jobs.set_queue_depth({"simulation": 2, "comfyui": 7})
        data = reader.get_metrics_data()
        assert [p.value for p in _points(data, "emp.jobs.submitted")] == [3]
        assert [p.value for p in _points(data, "emp.jobs.claimed")] == [1]
        (failed,) = _points(data, "emp.jobs.failed")
        assert dict(failed.attributes) == {
            "emp.job.service": "simulation",
            "emp.failure.category": "oom",
            "emp.retrying": True,
        }
        (wait,) = _points(data, "emp.job.queue_wait")
        assert (wait.count, wait.sum) == (1, 0.25)
        durations = {p.attributes["outcome"]: p.sum for p in _points(data, "emp.job.duration")}
        assert durations == {"completed": 1.5, "failed": 0.5}
        depth = {p.attributes["emp.job.service"]: p.value for p in _points(data, "emp.queue.depth")}
        assert depth == {"simulation": 2, "comfyui": 7}

        jobs.set_queue_depth({"simulation": 1})  # comfyui drained: 0, not its last value
        depth = {
            p.attributes["emp.job.service"]: p.value
            for p in _points(reader.get_metrics_data(), "emp.queue.depth")
        }
        assert depth == {"simulation": 1, "comfyui": 0}
    finally:
        tel.shutdown()


# --- one trace from the submitter to the worker --------------------------------------------------
async def test_one_trace_from_submit_to_worker_spans(queue: Queue, redis: aioredis.Redis) -> None:
    api_spans, worker_spans = InMemorySpanExporter(), InMemorySpanExporter()
    api = _setup(service_name="emp-api", span_exporters=[api_spans])
    worker = _setup(service_name="emp-worker", span_exporters=[worker_spans])

    with api.tracer().start_as_current_span("job.submit", kind=trace.SpanKind.PRODUCER):
        traceparent = current_traceparent()
        job_id = await queue.submit({"service": "simulation"}, traceparent=traceparent)
    assert traceparent.startswith("00-")

    async def work() -> None:
        """The worker's side, in a context of its own: only the queue carries the trace."""
        assert not trace.get_current_span().get_span_context().is_valid
        sent = time.time_ns()
        claimed = (
            await queue.claim(WorkerCapabilities(worker_id="w1", services=["simulation"]))
        ).claimed
        assert claimed is not None
        assert claimed.id == job_id
        stored = (await redis.hget(queue.keys.job(job_id), "traceparent") or b"").decode()
        assert stored == traceparent
        common = {"traceparent": stored, "job_id": job_id, "service": "simulation"}
        with job_span(worker.tracer(), "job.claim", start_time_ns=sent, **common):
            pass
        tracer = worker.tracer()
        complete = trace.SpanKind.INTERNAL
        with (
            job_span(tracer, "job.run", **common),
            job_span(tracer, "job.complete", kind=complete, **common),
        ):
            await queue.complete(claimed, {"ok": True})

    await asyncio.create_task(work(), context=contextvars.Context())
    (submit,) = api_spans.get_finished_spans()
    spans = {s.name: s for s in worker_spans.get_finished_spans()}
    assert set(spans) == {"job.claim", "job.run", "job.complete"}
    assert submit.context is not None
    trace_id = submit.context.trace_id
    assert {s.context.trace_id for s in spans.values() if s.context} == {trace_id}
    for name in ("job.claim", "job.run"):
        parent = spans[name].parent
        assert parent is not None
        assert parent.span_id == submit.context.span_id
    run_ctx = spans["job.run"].context
    complete_parent = spans["job.complete"].parent
    assert run_ctx is not None
    assert complete_parent is not None
    assert complete_parent.span_id == run_ctx.span_id
    assert spans["job.run"].attributes == {"emp.job.id": job_id, "emp.job.service": "simulation"}
    api.shutdown()
    worker.shutdown()


def test_a_job_without_traceparent_starts_its_own_trace() -> None:
    exporter = InMemorySpanExporter()
    tel = _setup(service_name="emp-worker", span_exporters=[exporter])
    for bad in ("", "not-a-traceparent", "00-" + "0" * 32 + "-" + "0" * 16 + "-01"):
        with job_span(tel.tracer(), "job.run", traceparent=bad, job_id="j", service="s"):
            pass
    assert all(s.parent is None for s in exporter.get_finished_spans())
    assert len({s.context.trace_id for s in exporter.get_finished_spans() if s.context}) == 3
    tel.shutdown()


# --- over the wire: a real OTLP/HTTP receiver ----------------------------------------------------
class _Receiver(ThreadingHTTPServer):
    """An OTLP/HTTP endpoint on 127.0.0.1 that keeps every request's path and decoded body."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, bytes, str]] = []
        self.arrived = threading.Condition()
        super().__init__(("127.0.0.1", 0), _Handler)

    def wait_for(self, path: str, count: int, within: float = 10.0) -> list[bytes]:
        def bodies() -> list[bytes]:
            return [body for p, body, _ in self.requests if p == path]

        with self.arrived:
            self.arrived.wait_for(lambda: len(bodies()) >= count, timeout=within)
        return bodies()


class _Handler(BaseHTTPRequestHandler):
    server: _Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        with self.server.arrived:
            self.server.requests.append((self.path, body, self.headers.get("Content-Type", "")))
            self.server.arrived.notify_all()
        reply = ExportMetricsServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[_Receiver]:
    server = _Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def _attrs(pairs: Sequence[Any]) -> dict[str, Any]:
    return {kv.key: getattr(kv.value, kv.value.WhichOneof("value")) for kv in pairs}


def test_heartbeat_and_spans_go_over_otlp_http(
    receiver: _Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    host, port = receiver.server_address[:2]
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://{host!s}:{port}")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    tel = _setup(
        service_name="emp-machine",
        instance_id="m7",
        machine_id="m7",
        environment="ci",
        heartbeat_interval_s=0.2,
    )
    try:
        assert tel.exporting
        with tel.tracer().start_as_current_span("machine.start"):
            pass
        bodies = receiver.wait_for("/v1/metrics", 2)  # two ticks: it repeats on its own
        assert len(bodies) >= 2
    finally:
        tel.shutdown()  # flushes the span batch
    request = ExportMetricsServiceRequest.FromString(bodies[0])
    (rm,) = request.resource_metrics
    resource = _attrs(rm.resource.attributes)
    assert resource["service.name"] == "emp-machine"
    assert resource["service.instance.id"] == "m7"
    assert resource["machine.id"] == "m7"
    assert resource["deployment.environment"] == "ci"
    assert resource["service.version"] == "0.1.0"
    heartbeat = [m for sm in rm.scope_metrics for m in sm.metrics if m.name == HEARTBEAT]
    assert len(heartbeat) == 1
    (point,) = heartbeat[0].gauge.data_points
    assert point.as_int == 1 or point.as_double == 1
    assert _attrs(point.attributes) == {"service.name": "emp-machine", "service.instance.id": "m7"}
    assert all(ct == "application/x-protobuf" for _, _, ct in receiver.requests)

    (traces,) = receiver.wait_for("/v1/traces", 1)
    spans = ExportTraceServiceRequest.FromString(traces).resource_spans[0].scope_spans[0].spans
    assert [s.name for s in spans] == ["machine.start"]


async def test_redis_commands_become_spans_once_instrumented(redis_url: str) -> None:
    from opentelemetry.instrumentation.redis import RedisInstrumentor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from emp_core.redis.client import connect
    from emp_core.telemetry import instrument_redis, setup_telemetry

    spans = InMemorySpanExporter()
    telemetry = setup_telemetry("emp-worker", span_exporters=[spans], install=False)
    assert not instrument_redis(setup_telemetry("emp-worker", install=False))  # nothing exported
    assert instrument_redis(telemetry)
    client = connect(redis_url)
    try:
        await client.set("emp-telemetry-probe", "1")
    finally:
        RedisInstrumentor().uninstrument()
        await client.aclose()
    names = [s.name for s in spans.get_finished_spans()]
    assert "SET" in names, names
