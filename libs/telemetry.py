"""OpenTelemetry set-up shared by every service, and trace propagation through NATS headers.

gRPC spans come from opentelemetry-instrumentation-grpc's aio interceptors (see libs.grpcx).
NATS has no instrumentation library, so publish and consume spans are made here, following the
messaging semantic conventions: a PRODUCER span injects its context into the message headers and
the consumer starts a CONSUMER span as its child.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    DEFAULT_OFF,
    DEFAULT_ON,
    ParentBasedTraceIdRatio,
    Sampler,
    TraceIdRatioBased,
)
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, SpanKind, TraceFlags, TraceState

__all__ = [
    "client_span",
    "consume_span",
    "current_trace_context",
    "parse_traceparent",
    "publish_span",
    "recording",
    "sampler_from_env",
    "setup_telemetry",
    "shutdown_telemetry",
    "tracer",
    "unrecorded_span",
]

_log = logging.getLogger(__name__)
_provider: TracerProvider | None = None


def setup_telemetry(service_name: str, env: Mapping[str, str]) -> TracerProvider:
    """Install a tracer provider; export over OTLP/gRPC when OTEL_EXPORTER_OTLP_ENDPOINT is set.

    The exporter reads the standard OTEL_* variables itself (endpoint, headers, insecure,
    batch delays), so deployments configure it the way they configure any other service.
    """
    global _provider
    resource = Resource.create({"service.name": env.get("OTEL_SERVICE_NAME") or f"postwire-{service_name}"})
    exporting = bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
    provider = TracerProvider(resource=resource, sampler=sampler_from_env(env, exporting=exporting))
    if exporting:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _provider = provider
    global _recording
    _recording = exporting
    return provider


_recording = False


def recording() -> bool:
    """Whether spans are recorded (an exporter is set): without one, per-call span work beyond
    the ids is skipped (libs.grpcx.tracing)."""
    return _recording


# OTEL_TRACES_SAMPLER's values (the SDK's names); the *ratio ones take OTEL_TRACES_SAMPLER_ARG.
_SAMPLERS: dict[str, Sampler] = {
    "always_on": ALWAYS_ON,
    "always_off": ALWAYS_OFF,
    "parentbased_always_on": DEFAULT_ON,
    "parentbased_always_off": DEFAULT_OFF,
}
_RATIO_SAMPLERS = {"traceidratio": TraceIdRatioBased, "parentbased_traceidratio": ParentBasedTraceIdRatio}


def sampler_from_env(env: Mapping[str, str], *, exporting: bool) -> Sampler:
    """Without an exporter nothing is recorded: a recorded span nobody reads cost 13 % of the
    CPU per message. The dropped spans still carry fresh trace ids (and propagate them through
    gRPC and NATS headers), so log lines and INTERNAL errors keep their trace id. With an
    exporter, OTEL_TRACES_SAMPLER decides; its default, parent-based always-on, keeps one whole
    trace per message. An unknown name falls back to that default, as the SDK does."""
    if not exporting:
        return ALWAYS_OFF
    name = env.get("OTEL_TRACES_SAMPLER", "").strip().lower() or "parentbased_always_on"
    if name in _RATIO_SAMPLERS:
        try:
            rate = float(env.get("OTEL_TRACES_SAMPLER_ARG", "1.0"))
        except ValueError:
            rate = 1.0
        return _RATIO_SAMPLERS[name](min(max(rate, 0.0), 1.0))
    if name not in _SAMPLERS:
        _log.warning("OTEL_TRACES_SAMPLER=%r is not a known sampler; using parentbased_always_on", name)
    return _SAMPLERS.get(name, DEFAULT_ON)


def shutdown_telemetry() -> None:
    """Flush and stop exporting; called last during shutdown so the shutdown itself is traced."""
    if _provider is not None:
        _provider.shutdown()


_tracer: tuple[trace.TracerProvider, trace.Tracer] | None = None


def tracer() -> trace.Tracer:
    # get_tracer builds a new Tracer (and its instrumentation scope, under a warnings filter) on
    # every call: ~3 % of mta_worker's CPU when called per span. One per provider is enough.
    global _tracer
    provider = trace.get_tracer_provider()
    if _tracer is None or _tracer[0] is not provider:
        _tracer = (provider, trace.get_tracer("postwire", tracer_provider=provider))
    return _tracer[1]


_ids = RandomIdGenerator()
_NO_STATE = TraceState()


def parse_traceparent(parent: object, state: object) -> tuple[int, int, str]:
    """(trace id, trace flags, tracestate) from a W3C traceparent and tracestate; trace id 0 when
    there is none or it is malformed (the work then starts a trace of its own)."""
    fields = parent.split("-") if isinstance(parent, str) else ()
    if len(fields) < 4 or len(fields[1]) != 32 or len(fields[2]) != 16 or len(fields[3]) != 2:
        return 0, 0, ""
    try:
        return int(fields[1], 16), int(fields[3], 16) & 0xFF, state if isinstance(state, str) else ""
    except ValueError:
        return 0, 0, ""


def unrecorded_span(trace_id: int, flags: int, state: str | TraceState) -> NonRecordingSpan:
    """A span that only carries ids: `trace_id` (a fresh one when 0) and a fresh span id. What
    the SDK's tracer returns when nothing is recorded, without its sampler and span machinery."""
    return NonRecordingSpan(
        SpanContext(
            trace_id=trace_id or _ids.generate_trace_id(),
            span_id=_ids.generate_span_id(),
            is_remote=False,
            trace_flags=TraceFlags(flags),
            trace_state=_trace_state(state),
        )
    )


def _trace_state(state: str | TraceState) -> TraceState:
    if isinstance(state, TraceState):
        return state
    return TraceState.from_header([state]) if state else _NO_STATE


@contextmanager
def _current(span: Span) -> Iterator[Span]:
    token = otel_context.attach(trace.set_span_in_context(span))
    try:
        yield span
    finally:
        otel_context.detach(token)


def _traceparent(ids: SpanContext) -> str:
    return f"00-{ids.trace_id:032x}-{ids.span_id:016x}-{ids.trace_flags:02x}"


@contextmanager
def publish_span(subject: str, headers: dict[str, str]) -> Iterator[Span]:
    """A PRODUCER span around a publish; its context is injected into `headers`.

    Without an exporter (ALWAYS_OFF), the child ids the SDK would make, put in place directly:
    the same trace id, a fresh span id, flags 00, the parent's tracestate (Postwire sets no
    baggage). The SDK path cost ~10 us per publish, two per accepted message in submission alone."""
    if not _recording:
        parent = trace.get_current_span().get_span_context()
        ids_only = (
            unrecorded_span(parent.trace_id, 0, parent.trace_state)
            if parent.is_valid
            else unrecorded_span(0, 0, "")
        )
        ids = ids_only.get_span_context()
        headers["traceparent"] = _traceparent(ids)
        if ids.trace_state:
            headers["tracestate"] = ids.trace_state.to_header()
        with _current(ids_only):
            yield ids_only
        return
    with tracer().start_as_current_span(f"{subject} publish", kind=SpanKind.PRODUCER) as span:
        span.set_attribute("messaging.system", "nats")
        span.set_attribute("messaging.destination.name", subject)
        span.set_attribute("messaging.operation.type", "publish")
        propagate.inject(headers)
        yield span


@contextmanager
def consume_span(subject: str, headers: Mapping[str, str] | None) -> Iterator[Span]:
    """A CONSUMER span whose parent is the producer's context carried in `headers` (without an
    exporter: its ids only, as in `publish_span`)."""
    if not _recording:
        found = headers or {}
        trace_id, _, state = parse_traceparent(found.get("traceparent"), found.get("tracestate"))
        with _current(unrecorded_span(trace_id, 0, state)) as span:
            yield span
        return
    parent = propagate.extract(dict(headers or {}))
    token = otel_context.attach(parent)
    try:
        with tracer().start_as_current_span(f"{subject} process", kind=SpanKind.CONSUMER) as span:
            span.set_attribute("messaging.system", "nats")
            span.set_attribute("messaging.destination.name", subject)
            span.set_attribute("messaging.operation.type", "process")
            yield span
    finally:
        otel_context.detach(token)


def current_trace_context() -> str:
    """The current span's W3C traceparent ('' outside a trace), to store beside work that runs
    later in another task, so that work's spans join the same trace (see `client_span`), or to
    send on a call. Formatted directly: what the propagator would write, without its machinery
    (no tracestate or baggage: nothing of Postwire's sets them), on every internal call."""
    ids = trace.get_current_span().get_span_context()
    return _traceparent(ids) if ids.is_valid else ""


@contextmanager
def client_span(name: str, traceparent: str, attributes: Mapping[str, str | int]) -> Iterator[Span]:
    """A CLIENT span whose parent is the stored `traceparent` (a root span when it is empty)."""
    parent = propagate.extract({"traceparent": traceparent} if traceparent else {})
    token = otel_context.attach(parent)
    try:
        with tracer().start_as_current_span(name, kind=SpanKind.CLIENT) as span:
            for key, value in attributes.items():
                span.set_attribute(key, value)
            yield span
    finally:
        otel_context.detach(token)
