"""The overload case of `python -m bench`: SendEmail calls open loop at ~3x the measured
single-send rate, so the servers must refuse the excess (libs.grpcx.overload).

Reported: accepted calls per second, the share refused (RESOURCE_EXHAUSTED or UNAVAILABLE, each
with RetryInfo), how fast a refusal comes back (p99), the accepted calls' latency (p99, to set
beside the single-send accept p99), and the largest resident memory each service reached while
it ran (sampled every 100 ms; the bar is 300 MB per service, pools included). Every accepted
message must still reach the sink exactly once.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from postwire.v1 import mail_service_pb2_grpc

from bench import peer
from bench.__main__ import Deliveries, await_deliveries, build_request, delivery_cap, log, rss_mb
from bench.compare import percentile
from bench.production import Sender
from libs.capture import SmtpSink
from libs.embedded.suite import Suite
from libs.grpcx.overload import OVERLOADED_REASON
from libs.grpcx.status import retry_delay

__all__ = ["OVERLOAD_FACTOR", "Overload", "overload_problems", "overload_table", "run_overload"]

OVERLOAD_FACTOR = 3.0
CALL_TIMEOUT_SECONDS = 30.0
SAMPLE_SECONDS = 0.1
RSS_BAR_MB = 300.0
_SHED_CODES = {grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE}


@dataclass
class Overload:
    offered_per_second: float
    calls: int
    wall_seconds: float = 0.0
    accepted: dict[str, float] = field(default_factory=dict)  # message id -> accept latency (s)
    refused: list[float] = field(default_factory=list)  # latency of each refusal (s)
    refused_by_code: dict[str, list[float]] = field(default_factory=dict)
    refused_without_retry_info: int = 0
    errors: Counter[str] = field(default_factory=Counter)  # anything else, by code
    max_rss_mb: dict[str, float] = field(default_factory=dict)
    deliveries: Deliveries | None = None


def _refused_by(exc: grpc.aio.AioRpcError) -> str:
    """" from <service>" for a load-shedding refusal (its ErrorInfo), else ""."""
    try:
        status = rpc_status.from_call(exc)  # type: ignore[arg-type]  # an aio error has the same trailers
    except ValueError:
        return ""
    for detail in status.details if status else []:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            if info.reason == OVERLOADED_REASON:
                return f" from {info.metadata.get('service', '?')}"
    return ""


async def _sample_rss(suite: Suite, result: Overload, stop: asyncio.Event) -> None:
    while not stop.is_set():
        for name, proc in suite.processes.items():
            size = rss_mb(proc.pid)
            if size is not None:
                result.max_rss_mb[name] = max(result.max_rss_mb.get(name, 0.0), size)
        try:
            await asyncio.wait_for(stop.wait(), SAMPLE_SECONDS)
        except TimeoutError:
            pass


async def run_overload(
    suite: Suite,
    sink: SmtpSink,
    stub: mail_service_pb2_grpc.MailServiceAsyncStub,
    sender: Sender,
    single_rate: float,
    calls: int,
) -> Overload:
    per_second = OVERLOAD_FACTOR * single_rate
    result = Overload(per_second, calls)
    run = uuid.uuid4().hex[:8]
    requests = iter([build_request(run, i, sender.from_address) for i in range(calls)])

    async def one() -> None:
        request = next(requests)
        start = time.perf_counter()
        try:
            answer = await stub.SendEmail(request, metadata=sender.metadata, timeout=CALL_TIMEOUT_SECONDS)
        except grpc.aio.AioRpcError as exc:
            elapsed = time.perf_counter() - start
            if exc.code() in _SHED_CODES:
                result.refused.append(elapsed)
                by = _refused_by(exc)
                result.refused_by_code.setdefault(f"{exc.code().name}{by}", []).append(elapsed)
                if not retry_delay(exc):
                    result.refused_without_retry_info += 1
            else:
                result.errors[exc.code().name] += 1
            return
        result.accepted[answer.message_id] = time.perf_counter() - start

    sink.clear()
    log(f"postwire: overload, {calls} calls open loop at {per_second:.0f}/s ({OVERLOAD_FACTOR:g}x)…")
    stop = asyncio.Event()
    sampler = asyncio.create_task(_sample_rss(suite, result, stop))
    start = time.perf_counter()
    try:
        await peer.pace(one, calls, per_second)
    finally:
        result.wall_seconds = time.perf_counter() - start
        stop.set()
        await sampler
    result.deliveries = await await_deliveries(
        sink, set(result.accepted), cap_seconds=delivery_cap(max(1, len(result.accepted)))
    )
    return result


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 1000:.1f}"


def overload_table(result: Overload, single_accept_p99: float | None) -> list[str]:
    accepted = len(result.accepted)
    done = accepted + len(result.refused) + sum(result.errors.values())
    refused_pct = 100.0 * len(result.refused) / done if done else 0.0
    rate = accepted / result.wall_seconds if result.wall_seconds > 0 else 0.0
    lines = [
        "| offered/s | calls | accepted/s | refused % | refusal p99 ms | accepted p99 ms |"
        " single-send accept p99 ms | other errors |",
        "|---:|---:|---:|---:|---:|---:|---:|:---|",
        f"| {result.offered_per_second:.0f} | {result.calls} | {rate:.1f} | {refused_pct:.1f} |"
        f" {_ms(percentile(result.refused, 99))} | {_ms(percentile(list(result.accepted.values()), 99))} |"
        f" {_ms(single_accept_p99)} | {dict(result.errors) or 'none'} |",
        "",
        "Refusals by status: "
        + (
            ", ".join(
                f"{code} {len(times)} (p50 {_ms(percentile(times, 50))} ms, p99 {_ms(percentile(times, 99))} ms)"
                for code, times in sorted(result.refused_by_code.items())
            )
            or "none"
        ),
        "",
        f"Largest RSS per service during the overload (sampled every {SAMPLE_SECONDS * 1000:.0f} ms;"
        f" bar {RSS_BAR_MB:.0f} MB):",
        "",
        "| service | max RSS MB |",
        "|:---|---:|",
    ]
    lines += [f"| {name} | {size:.1f} |" for name, size in sorted(result.max_rss_mb.items())]
    return lines


def overload_problems(result: Overload | None) -> list[str]:
    if result is None:
        return []
    found: list[str] = []
    if result.errors:
        found.append(f"- **overload**: calls failed other than by shedding: {dict(result.errors)}")
    if result.refused_without_retry_info:
        found.append(f"- **overload**: {result.refused_without_retry_info} refusals without RetryInfo")
    deliveries = result.deliveries
    if deliveries is not None:
        missing = len(result.accepted) - len(deliveries.received_at)
        if missing:
            found.append(f"- **overload**: {missing} accepted messages not delivered")
        if deliveries.duplicates:
            found.append(f"- **overload**: {deliveries.duplicates} duplicate deliveries")
    over = {n: round(s) for n, s in result.max_rss_mb.items() if s > RSS_BAR_MB}
    if over:
        found.append(f"- **overload**: RSS over {RSS_BAR_MB:.0f} MB: {over}")
    return found
