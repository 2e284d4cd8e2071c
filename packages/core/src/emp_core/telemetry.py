"""Telemetry (ADR-003): the heartbeat every service reports, job metrics, and job traces.

Every service calls ``setup_telemetry("emp-…")`` once at start and ``shutdown()`` at exit. It
builds the resource (``service.name``, ``service.version``, ``service.instance.id``,
``deployment.environment``, ``machine.id``), registers the ``service.heartbeat`` gauge (always 1,
collected every 15 s) and exports metrics and traces over OTLP/HTTP when
``OTEL_EXPORTER_OTLP_ENDPOINT`` (or a per-signal ``OTEL_EXPORTER_OTLP_{METRICS,TRACES}_ENDPOINT``)
is set. Without one, telemetry is off: no-op providers, no threads, no network.

The standard variables are honoured: ``OTEL_SDK_DISABLED``, ``OTEL_SERVICE_NAME`` and
``OTEL_RESOURCE_ATTRIBUTES`` (they win over what the code sets, so operators can relabel),
``OTEL_METRIC_EXPORT_INTERVAL`` (ms; the heartbeat period when the caller names none),
``OTEL_METRICS_EXPORTER`` / ``OTEL_TRACES_EXPORTER`` (``none`` turns one signal off), and
every ``OTEL_EXPORTER_OTLP_*`` setting (headers, timeout, compression), which the OTLP exporters
read themselves. ``EMP_ENVIRONMENT`` names the deployment environment (default ``development``).

A job's trace crosses the queue as a W3C ``traceparent`` string stored with the job:
``current_traceparent()`` at submit, ``job_span(tracer, "job.run", traceparent=…)`` in the worker.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

from opentelemetry import metrics, trace
from opentelemetry.context import Context
from opentelemetry.metrics import CallbackOptions, Meter, MeterProvider, Observation
from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import OTELResourceDetector, Resource
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import Span, SpanKind, Tracer, TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

from emp_core import __version__

logger = logging.getLogger(__name__)

ServiceName = Literal["emp-api", "emp-studio", "emp-worker", "emp-machine"]
HEARTBEAT = "service.heartbeat"
DEFAULT_HEARTBEAT_SECONDS = 15.0
_SCOPE = "emp"
_PROPAGATOR = TraceContextTextMapPropagator()


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")


def _endpoint_set(signal: Literal["METRICS", "TRACES"]) -> bool:
    """Whether OTLP export of ``signal`` is configured and not switched off."""
    if os.environ.get(f"OTEL_{signal}_EXPORTER", "otlp").strip().lower() == "none":
        return False
    return bool(
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or os.environ.get(f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT")
    )


def heartbeat_interval(explicit_s: float | None = None) -> float:
    """Seconds between heartbeats: the caller's, else ``OTEL_METRIC_EXPORT_INTERVAL`` (ms), else
    15 (the SDK's own default, 60 s, is too slow to see a service go)."""
    if explicit_s is not None:
        if explicit_s <= 0:
            raise ValueError(f"the heartbeat interval must be positive, got {explicit_s}")
        return explicit_s
    raw = os.environ.get("OTEL_METRIC_EXPORT_INTERVAL", "").strip()
    if raw:
        try:
            ms = float(raw)
        except ValueError:
            ms = 0
        if ms > 0:
            return ms / 1000
        logger.warning("OTEL_METRIC_EXPORT_INTERVAL=%r is not a positive number of ms", raw)
    return DEFAULT_HEARTBEAT_SECONDS


def build_resource(
    service_name: str,
    *,
    instance_id: str,
    version: str = __version__,
    environment: str | None = None,
    machine_id: str | None = None,
) -> Resource:
    """The resource every signal of this process carries; ``OTEL_SERVICE_NAME`` and
    ``OTEL_RESOURCE_ATTRIBUTES`` override it."""
    env = environment or os.environ.get("EMP_ENVIRONMENT") or "development"
    attributes: dict[str, AttributeValue] = {
        "service.name": service_name,
        "service.namespace": "emp",
        "service.version": version,
        "service.instance.id": instance_id,
        # ADR-003 names `deployment.environment`; current semantic conventions renamed it to
        # `deployment.environment.name`. Both, so dashboards of either vintage find it.
        "deployment.environment": env,
        "deployment.environment.name": env,
        "host.name": socket.gethostname(),
    }
    if machine_id:
        attributes["machine.id"] = machine_id
    return Resource.create(attributes).merge(OTELResourceDetector().detect())


# --- job metrics ---------------------------------------------------------------------------------
class JobMetrics:
    """Counters, histograms and the queue-depth gauge of jobs, labelled by the job's service
    (``emp.job.service``: simulation, comfyui…); the emitting service is in the resource."""

    def __init__(self, meter: Meter) -> None:
        self._submitted = meter.create_counter(
            "emp.jobs.submitted", unit="{job}", description="Jobs submitted"
        )
        self._claimed = meter.create_counter(
            "emp.jobs.claimed", unit="{job}", description="Jobs claimed by a worker"
        )
        self._completed = meter.create_counter(
            "emp.jobs.completed", unit="{job}", description="Jobs completed"
        )
        self._failed = meter.create_counter(
            "emp.jobs.failed", unit="{job}", description="Job attempts that failed"
        )
        self._duration = meter.create_histogram(
            "emp.job.duration", unit="s", description="Time a worker spent running a job attempt"
        )
        self._queue_wait = meter.create_histogram(
            "emp.job.queue_wait", unit="s", description="Time from submit to claim"
        )
        self._depth_lock = threading.Lock()
        self._depth: dict[str, int] = {}
        meter.create_observable_gauge(
            "emp.queue.depth",
            callbacks=[self._observe_depth],
            unit="{job}",
            description="Pending jobs per service, as last reported by set_queue_depth",
        )

    @staticmethod
    def _attrs(service: str, **extra: AttributeValue) -> dict[str, AttributeValue]:
        return {"emp.job.service": service, **extra}

    def submitted(self, service: str, count: int = 1) -> None:
        self._submitted.add(count, self._attrs(service))

    def claimed(self, service: str, *, queue_wait_s: float | None = None) -> None:
        self._claimed.add(1, self._attrs(service))
        if queue_wait_s is not None:
            self._queue_wait.record(max(0.0, queue_wait_s), self._attrs(service))

    def completed(self, service: str, *, duration_s: float) -> None:
        self._completed.add(1, self._attrs(service))
        self._duration.record(max(0.0, duration_s), self._attrs(service, outcome="completed"))

    def failed(
        self,
        service: str,
        *,
        duration_s: float | None = None,
        category: str = "unknown",
        retrying: bool = False,
    ) -> None:
        """One failed attempt; ``category`` is the error pattern's class once patterns exist."""
        attrs: dict[str, AttributeValue] = {
            "emp.job.service": service,
            "emp.failure.category": category,
            "emp.retrying": retrying,
        }
        self._failed.add(1, attrs)
        if duration_s is not None:
            self._duration.record(max(0.0, duration_s), self._attrs(service, outcome="failed"))

    def set_queue_depth(self, depths: Mapping[str, int]) -> None:
        """The latest pending count per service (``await queue.depth()``); a service that drops
        out of ``depths`` reports 0 rather than its last value."""
        with self._depth_lock:
            self._depth = {**dict.fromkeys(self._depth, 0), **depths}

    def _observe_depth(self, _options: CallbackOptions) -> Iterable[Observation]:
        with self._depth_lock:
            snapshot = dict(self._depth)
        return [Observation(n, self._attrs(service)) for service, n in snapshot.items()]


# --- the set-up ----------------------------------------------------------------------------------
@dataclass
class Telemetry:
    """This process's providers. ``exporting`` is False when nothing leaves the process."""

    service_name: str
    instance_id: str
    resource: Resource
    meter_provider: MeterProvider
    tracer_provider: TracerProvider
    heartbeat_interval_s: float
    exporting: bool
    jobs: JobMetrics = field(init=False)

    def __post_init__(self) -> None:
        self.jobs = JobMetrics(self.meter())

    def meter(self, name: str = _SCOPE) -> Meter:
        return self.meter_provider.get_meter(name, __version__)

    def tracer(self, name: str = _SCOPE) -> Tracer:
        return self.tracer_provider.get_tracer(name, __version__)

    def force_flush(self, timeout_ms: int = 5000) -> None:
        if isinstance(self.meter_provider, SdkMeterProvider):
            self.meter_provider.force_flush(timeout_ms)
        if isinstance(self.tracer_provider, SdkTracerProvider):
            self.tracer_provider.force_flush(timeout_ms)

    def shutdown(self) -> None:
        """Export what is left and stop the export threads; call once at exit."""
        if isinstance(self.meter_provider, SdkMeterProvider):
            self.meter_provider.shutdown()
        if isinstance(self.tracer_provider, SdkTracerProvider):
            self.tracer_provider.shutdown()


def setup_telemetry(
    service_name: ServiceName,
    *,
    instance_id: str | None = None,
    machine_id: str | None = None,
    version: str = __version__,
    environment: str | None = None,
    heartbeat_interval_s: float | None = None,
    metric_readers: Sequence[MetricReader] = (),
    metric_exporters: Sequence[MetricExporter] = (),
    span_exporters: Sequence[SpanExporter] = (),
    install: bool = True,
) -> Telemetry:
    """Set up this process's telemetry; see the module docstring for what is configured how.

    ``metric_readers`` are added as they are (``InMemoryMetricReader`` in tests);
    ``metric_exporters`` are read every heartbeat interval and ``span_exporters`` get each span
    as it ends, beside the OTLP ones. ``install`` makes the providers the process's global ones
    (what instrumentation libraries use); the OpenTelemetry API allows that once per process.
    """
    interval = heartbeat_interval(heartbeat_interval_s)
    instance = instance_id or str(uuid.uuid4())
    resource = build_resource(
        service_name,
        instance_id=instance,
        version=version,
        environment=environment,
        machine_id=machine_id,
    )
    disabled = _env_flag("OTEL_SDK_DISABLED")
    protocol = os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    if protocol != "http/protobuf" and not disabled:
        logger.warning(
            "OTEL_EXPORTER_OTLP_PROTOCOL=%s is not supported; exporting http/protobuf", protocol
        )

    readers = list(metric_readers)
    exporters = list(metric_exporters)
    if not disabled and _endpoint_set("METRICS"):
        # Imported here: the exporter pulls in requests and protobuf, which idle services skip.
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        exporters.append(OTLPMetricExporter())
    readers += [
        PeriodicExportingMetricReader(e, export_interval_millis=interval * 1000) for e in exporters
    ]
    meter_provider: MeterProvider = (
        SdkMeterProvider(resource=resource, metric_readers=readers)
        if readers
        else metrics.NoOpMeterProvider()
    )

    processors: list[SpanProcessor] = [SimpleSpanProcessor(e) for e in span_exporters]
    if not disabled and _endpoint_set("TRACES"):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        processors.append(BatchSpanProcessor(OTLPSpanExporter()))
    tracer_provider: TracerProvider
    if processors:
        sdk_tracer = SdkTracerProvider(resource=resource)
        for processor in processors:
            sdk_tracer.add_span_processor(processor)
        tracer_provider = sdk_tracer
    else:
        tracer_provider = trace.NoOpTracerProvider()

    telemetry = Telemetry(
        service_name=str(resource.attributes.get("service.name", service_name)),
        instance_id=instance,
        resource=resource,
        meter_provider=meter_provider,
        tracer_provider=tracer_provider,
        heartbeat_interval_s=interval,
        exporting=bool(readers or processors),
    )
    _register_heartbeat(telemetry)
    if install and telemetry.exporting:
        metrics.set_meter_provider(meter_provider)
        trace.set_tracer_provider(tracer_provider)
        instrument_redis(telemetry)
    if telemetry.exporting:
        logger.info(
            "telemetry of %s (instance %s) on: heartbeat every %g s",
            telemetry.service_name, instance, interval,
        )  # fmt: skip
    return telemetry


def instrument_redis(telemetry: Telemetry) -> bool:
    """A span for every Redis command of this process (opentelemetry-instrumentation-redis),
    when traces are exported; True once instrumented. It patches redis-py process-wide, so it is
    done once, by the process's own set-up."""
    if not isinstance(telemetry.tracer_provider, SdkTracerProvider):
        return False
    # Imported here: instrumentation loads wrapt and patches redis-py only where it is used.
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    instrumentor = RedisInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(tracer_provider=telemetry.tracer_provider)
    return True


def _register_heartbeat(telemetry: Telemetry) -> None:
    """``service.heartbeat`` = 1 at every collection: its presence is the signal (ADR-003).
    The point carries the service and instance too, for backends that do not join resources."""
    attrs: dict[str, AttributeValue] = {
        "service.name": telemetry.service_name,
        "service.instance.id": telemetry.instance_id,
    }

    def observe(_options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(1, attrs)]

    telemetry.meter().create_observable_gauge(
        HEARTBEAT, callbacks=[observe], unit="1", description="1 while the service is running"
    )


# --- traces across the queue ---------------------------------------------------------------------
def current_traceparent(context: Context | None = None) -> str:
    """The current span's context as a W3C ``traceparent`` (``00-<trace>-<span>-<flags>``), or
    ``""`` when there is no recording span, for ``Queue.submit(..., traceparent=…)``."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=context)
    return carrier.get("traceparent", "")


def context_from_traceparent(traceparent: str | None) -> Context:
    """The parent context a ``traceparent`` names; an empty or invalid one gives a new trace."""
    if not traceparent:
        return Context()
    return _PROPAGATOR.extract({"traceparent": traceparent}, context=Context())


@contextmanager
def job_span(
    tracer: Tracer,
    name: str,
    *,
    traceparent: str | None,
    job_id: str,
    service: str,
    kind: SpanKind = SpanKind.CONSUMER,
    start_time_ns: int | None = None,
    attributes: Mapping[str, AttributeValue] | None = None,
) -> Iterator[Span]:
    """A span of a job's life in the submitter's trace (``job.claim``, ``job.run``,
    ``job.complete``): its parent is the span ``traceparent`` names, or the current span when
    that is already in the same trace (a ``job.complete`` inside ``job.run``).
    ``start_time_ns`` backdates the start, e.g. to when the claim was sent (``time.time_ns()``).
    """
    if isinstance(tracer, trace.NoOpTracer):
        # Traces go nowhere: skip the parsing and context switches, a tenth of a worker's CPU per
        # job when jobs take milliseconds.
        yield trace.INVALID_SPAN
        return
    parent = context_from_traceparent(traceparent)
    remote = trace.get_current_span(parent).get_span_context()
    current = trace.get_current_span().get_span_context()
    nest = current.is_valid and (not remote.is_valid or current.trace_id == remote.trace_id)
    context = None if nest else parent
    attrs: dict[str, AttributeValue] = {"emp.job.id": job_id, "emp.job.service": service}
    attrs.update(attributes or {})
    with tracer.start_as_current_span(
        name, context=context, kind=kind, attributes=attrs, start_time=start_time_ns
    ) as span:
        yield span
