"""bench.hops' pure part: from the sends, the spans and the sink's arrivals to the hop table."""

from __future__ import annotations

from bench.hops import Traced, collect, render
from libs.testing.otlp_receiver import ReceivedSpan

MS = 1_000_000
T0 = 1_700_000_000 * 1_000_000_000


def span(trace: str, service: str, name: str, start_ms: float, end_ms: float) -> ReceivedSpan:
    return ReceivedSpan(
        service=service,
        name=name,
        trace_id=trace,
        span_id="s",
        parent_span_id="",
        kind=1,
        start_ns=T0 + int(start_ms * MS),
        end_ns=T0 + int(end_ms * MS),
    )


def test_offsets_are_from_the_call_start_and_a_repeated_span_spans_first_start_to_last_end() -> None:
    traced = [
        Traced("m1", "t1", T0, T0 + 20 * MS),
        Traced("m2", "", T0 + 5 * MS, T0 + 30 * MS),  # not sampled: client and sink rows only
    ]
    spans = [
        span("t1", "postwire-edge", "SendEmail", 1, 19),
        span("t1", "postwire-mta_worker", "smtp delivery", 40, 45),
        span("t1", "postwire-mta_worker", "smtp delivery", 60, 70),  # a retry
        span("other", "postwire-edge", "SendEmail", 0, 1),  # someone else's trace
    ]
    hops = collect(traced, spans, {"m1": (T0 + 66 * MS) / 1e9, "m2": (T0 + 105 * MS) / 1e9})
    assert hops.starts["edge: SendEmail"] == [1.0]
    assert hops.durations["edge: SendEmail"] == [18.0]
    assert hops.starts["mta_worker: smtp delivery"] == [40.0]
    assert hops.durations["mta_worker: smtp delivery"] == [30.0]
    assert hops.starts["client: answer received"] == [20.0, 25.0]
    assert [round(s, 3) for s in hops.starts["sink: message received"]] == [66.0, 100.0]
    table = render(hops, 2, 10.0)
    rows = [line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    # In order of median start; the header row first.
    assert rows == [
        "span (service: name)",
        "edge: SendEmail",
        "client: answer received",
        "mta_worker: smtp delivery",
        "sink: message received",
    ]
