"""Spans are recorded only when something exports them, yet trace ids always exist.

Without an exporter a recorded span is pure cost; the ids must still reach log lines, INTERNAL
errors and NATS headers, so a support ticket can still be matched to its log lines.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, DEFAULT_ON, ParentBasedTraceIdRatio

from libs.runtime import _JsonFormatter as JsonFormatter
from libs.telemetry import consume_span, publish_span, sampler_from_env

EXPORTER = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"}


@pytest.fixture
def tracer_without_exporter() -> Iterator[trace.Tracer]:
    provider = TracerProvider(sampler=sampler_from_env({}, exporting=False))
    yield provider.get_tracer("test")
    provider.shutdown()


def test_no_exporter_records_nothing() -> None:
    assert sampler_from_env({}, exporting=False) is ALWAYS_OFF
    # Not even when the operator asked for a sampler: there is nobody to send the spans to.
    assert sampler_from_env({"OTEL_TRACES_SAMPLER": "always_on"}, exporting=False) is ALWAYS_OFF


def test_exporter_defaults_to_parent_based_always_on() -> None:
    assert sampler_from_env(EXPORTER, exporting=True) is DEFAULT_ON
    assert sampler_from_env({**EXPORTER, "OTEL_TRACES_SAMPLER": "bogus"}, exporting=True) is DEFAULT_ON


def test_exporter_honours_otel_traces_sampler() -> None:
    sampler = sampler_from_env(
        {**EXPORTER, "OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.25"},
        exporting=True,
    )
    assert isinstance(sampler, ParentBasedTraceIdRatio)
    assert "0.25" in sampler.get_description()


def test_unrecorded_span_still_has_a_trace_id_in_logs(tracer_without_exporter: trace.Tracer) -> None:
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "accepted", None, None)
    with tracer_without_exporter.start_as_current_span("SendEmail") as span:
        assert not span.is_recording()
        line = json.loads(JsonFormatter("submission").format(record))
    assert line["trace_id"] == f"{span.get_span_context().trace_id:032x}"
    assert int(line["trace_id"], 16) != 0


def test_unrecorded_trace_crosses_nats_headers(
    tracer_without_exporter: trace.Tracer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("libs.telemetry.tracer", lambda: tracer_without_exporter)
    headers: dict[str, str] = {}
    with tracer_without_exporter.start_as_current_span("SendEmail") as root:
        with publish_span("postwire.work.route", headers):
            pass
    assert headers["traceparent"].split("-")[1] == f"{root.get_span_context().trace_id:032x}"
    with consume_span("postwire.work.route", headers) as consumer:
        assert not consumer.is_recording()
        assert consumer.get_span_context().trace_id == root.get_span_context().trace_id


def test_unrecorded_publish_outside_a_trace_starts_one_and_a_bare_message_gets_one() -> None:
    headers: dict[str, str] = {}
    with publish_span("postwire.work.route", headers) as producer:
        assert not producer.is_recording()
    version, trace_id, span_id, flags = headers["traceparent"].split("-")
    assert (version, flags) == ("00", "00") and int(trace_id, 16) != 0
    assert span_id == f"{producer.get_span_context().span_id:016x}"
    with consume_span("postwire.work.route", None) as consumer:
        assert consumer.get_span_context().trace_id not in (0, int(trace_id, 16))
    with consume_span("postwire.work.route", {"traceparent": "garbage"}) as consumer:
        assert consumer.get_span_context().is_valid
