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
import gc
import multiprocessing
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from postwire.v1 import mail_service_pb2, mail_service_pb2_grpc

from bench import peer
from bench.__main__ import Deliveries, await_deliveries, build_request, delivery_cap, log, rss_mb
from bench.compare import percentile
from bench.production import CLIENT_REALTIME_PRIORITY, Sender
from libs.capture import SmtpSink
from libs.embedded.suite import Suite
from libs.grpcx.overload import OVERLOADED_REASON
from libs.grpcx.status import retry_delay
from libs.priority import run_realtime

__all__ = ["OVERLOAD_FACTOR", "Overload", "overload_problems", "overload_table", "run_overload"]

OVERLOAD_FACTOR = 3.0
CALL_TIMEOUT_SECONDS = 30.0
SAMPLE_SECONDS = 0.1
LAG_PROBE_SECONDS = 0.005
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
    # How late the bench's own event loop ran a 5 ms timer during the run: a refusal can come
    # back no sooner than the client gets to read it, so this bounds what the client can measure.
    client_lag: list[float] = field(default_factory=list)
    # Whether the sending client ran under a real-time priority (bench.production), so that its
    # own waits for a core are not in what it measures.
    client_realtime: bool = False
    # Its own CPU time while it ran (serializing the requests included): on one machine, CPU
    # the servers did not get.
    client_cpu_seconds: float = 0.0
    deliveries: Deliveries | None = None


def _refused_by(exc: grpc.aio.AioRpcError) -> str:
    """ " from <service>" for a load-shedding refusal (its ErrorInfo), else ""."""
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


async def _probe_lag(result: Overload, stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        due = loop.time() + LAG_PROBE_SECONDS
        await asyncio.sleep(LAG_PROBE_SECONDS)
        result.client_lag.append(max(0.0, loop.time() - due))


async def run_overload(
    suite: Suite,
    sink: SmtpSink,
    sender: Sender,
    single_rate: float,
    calls: int,
) -> Overload:
    per_second = OVERLOAD_FACTOR * single_rate
    sink.clear()
    log(f"postwire: overload, {calls} calls open loop at {per_second:.0f}/s ({OVERLOAD_FACTOR:g}x)…")
    stop = asyncio.Event()
    sampled = Overload(per_second, calls)
    sampler = asyncio.create_task(_sample_rss(suite, sampled, stop))
    # The calls go out from a process of their own: this one also runs the SMTP sink, the webhook
    # receiver and the loopback DNS in threads, and a refusal's latency must not include the time
    # the measuring client waited for its own loop (the report states that lag).
    spawn = multiprocessing.get_context("spawn")
    try:
        with ProcessPoolExecutor(1, mp_context=spawn) as pool:
            result = await asyncio.get_running_loop().run_in_executor(
                pool,
                _send_from_own_process,
                suite.ports.addr("edge"),
                sender.metadata,
                sender.from_address,
                calls,
                per_second,
            )
    finally:
        stop.set()
        await sampler
    result.max_rss_mb = sampled.max_rss_mb
    result.deliveries = await await_deliveries(
        sink, set(result.accepted), cap_seconds=delivery_cap(max(1, len(result.accepted)))
    )
    return result


def _send_from_own_process(
    address: str, metadata: tuple[tuple[str, str], ...], from_address: str, calls: int, per_second: float
) -> Overload:
    # The imports this process needed (the bench, grpc, protobuf) stay for its whole life: out
    # of the collector's sight, a full collection mid-run no longer stalls the client's loop (and
    # so every reply it reads) for tens of milliseconds.
    gc.collect()
    gc.freeze()
    try:
        run_realtime(CLIENT_REALTIME_PRIORITY)
        realtime = True
    except PermissionError:
        realtime = False
    cpu_before = time.process_time()
    result = asyncio.run(_send_open_loop(address, metadata, from_address, calls, per_second))
    result.client_cpu_seconds = time.process_time() - cpu_before
    result.client_realtime = realtime
    return result


async def _send_open_loop(
    address: str, metadata: tuple[tuple[str, str], ...], from_address: str, calls: int, per_second: float
) -> Overload:
    result = Overload(per_second, calls)
    run = uuid.uuid4().hex[:8]
    # Serialized before the burst, and the refusals' details read after it: the measuring client
    # shares the box with the servers, and what it spends per call is CPU they do not get (and
    # loop lag inside every latency it measures).
    requests = iter([build_request(run, i, from_address).SerializeToString() for i in range(calls)])
    refusals: list[tuple[float, grpc.aio.AioRpcError]] = []
    async with grpc.aio.insecure_channel(address) as channel:
        await channel.channel_ready()
        send: grpc.aio.UnaryUnaryMultiCallable[bytes, mail_service_pb2.SendEmailResponse] = (
            channel.unary_unary(
                "/postwire.v1.MailService/SendEmail",
                response_deserializer=mail_service_pb2.SendEmailResponse.FromString,
            )
        )

        async def one() -> None:
            request = next(requests)
            start = time.perf_counter()
            try:
                answer = await send(request, metadata=metadata, timeout=CALL_TIMEOUT_SECONDS)
            except grpc.aio.AioRpcError as exc:
                refusals.append((time.perf_counter() - start, exc))
                return
            result.accepted[answer.message_id] = time.perf_counter() - start

        stop = asyncio.Event()
        prober = asyncio.create_task(_probe_lag(result, stop))
        start = time.perf_counter()
        try:
            await peer.pace(one, calls, per_second)
        finally:
            result.wall_seconds = time.perf_counter() - start
            stop.set()
            await prober
    for elapsed, exc in refusals:
        if exc.code() in _SHED_CODES:
            result.refused.append(elapsed)
            result.refused_by_code.setdefault(f"{exc.code().name}{_refused_by(exc)}", []).append(elapsed)
            if not retry_delay(exc):
                result.refused_without_retry_info += 1
        else:
            result.errors[exc.code().name] += 1
    return result


def _busy(result: Overload) -> str:
    """The sending client's CPU over its sending, in seconds and as a share of one core."""
    share = 100.0 * result.client_cpu_seconds / result.wall_seconds if result.wall_seconds > 0 else 0.0
    return f"{result.client_cpu_seconds:.2f} s ({share:.0f} % of a core)"


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
        "The sending client: a process of its own, "
        + (
            f"under a real-time priority (SCHED_RR {CLIENT_REALTIME_PRIORITY}, above the services')"
            if result.client_realtime
            else "at normal priority (the bench may not grant a real-time one here)"
        )
        + f"; its event-loop lag meanwhile p50 {_ms(percentile(result.client_lag, 50))} ms,"
        f" p99 {_ms(percentile(result.client_lag, 99))} ms; its CPU {_busy(result)}.",
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


# -- `python -m bench.overload`: case 6 on its own ----------------------------------------------


async def _overload_only(
    suite: Suite, sink: SmtpSink, dns: Any, webhook_url: str, rate: float, calls: int, singles: int
) -> str:
    from bench.__main__ import (
        ADMIN_TOKEN,
        WARMUP_MESSAGES,
        cpu_snapshot,
        send_many,
        service_usage,
        wait_ready,
    )
    from bench.production import make_sender
    from bench.side_by_side import delivered_rate

    await wait_ready(suite)
    async with grpc.aio.insecure_channel(suite.ports.addr("edge")) as channel:
        stub = mail_service_pb2_grpc.MailServiceStub(channel)
        sender = await make_sender(channel, ADMIN_TOKEN, dns, webhook_url)
        warm = await send_many(stub, sender.api_key, WARMUP_MESSAGES, 64, sender.from_address)
        await await_deliveries(
            sink, {s.message_id for s in warm.sent}, cap_seconds=delivery_cap(WARMUP_MESSAGES)
        )
        # Single sends first: their rate (unless --rate fixes it) and each service's CPU per message.
        sink.clear()
        log(f"postwire: {singles} single sends at 64 in flight…")
        before = cpu_snapshot(suite)
        phase = await send_many(stub, sender.api_key, singles, 64, sender.from_address)
        found = await await_deliveries(
            sink, {s.message_id for s in phase.sent}, cap_seconds=delivery_cap(singles)
        )
        usage = service_usage(suite, before)
        delivered = max(1, len(found.received_at))
        cpu = ", ".join(f"{name} {1000 * u.cpu_seconds / delivered:.2f}" for name, u in sorted(usage.items()))
        measured = delivered_rate(phase, found) or 50.0
        log(f"single-send rate {measured:.1f}/s")
        result = await run_overload(suite, sink, sender, rate or measured, calls)
    accept_p99 = percentile([s.accept_seconds for s in phase.sent], 99)
    errors = sum(phase.errors.values())
    lines = [
        f"Single sends: {delivered} delivered at {measured:.1f}/s, {errors} send errors;"
        f" CPU ms per message: {cpu}",
        "",
        *overload_table(result, accept_p99),
        "",
        *overload_problems(result),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Only the overload case, in the production shape: for A/B runs of load shedding that do not
    need the whole side-by-side run. `--rate` fixes the single-send rate (else it is measured)."""
    import argparse
    import os
    import shutil
    import tempfile
    from pathlib import Path

    from bench.__main__ import ADMIN_TOKEN, INTERNAL_TOKEN, spawn_services
    from bench.production import WEBHOOK_PATH, front_door_overrides, priorities_text, production_env
    from libs.embedded.ports import free_port
    from libs.embedded.suite import SERVICES, SuitePorts
    from libs.testing.dns_server import LoopbackDns
    from libs.testing.webhook_receiver import WebhookReceiver

    parser = argparse.ArgumentParser(prog="python -m bench.overload")
    parser.add_argument(
        "--rate", type=float, default=0.0, help="single-send rate to triple (default: measure)"
    )
    parser.add_argument("--calls", type=int, default=600, help="overload calls (default 600)")
    parser.add_argument("--singles", type=int, default=400, help="single sends first (default 400)")
    args = parser.parse_args(argv)
    data_dir = Path(tempfile.mkdtemp(prefix="postwire-bench-"))
    sink = SmtpSink("127.0.0.1", 0, scripted=False)
    dns = LoopbackDns()
    suite: Suite | None = None
    try:
        sink.start()
        dns.start()
        env = production_env(ADMIN_TOKEN, dns)
        overrides = front_door_overrides()
        suite = Suite(
            data_dir=data_dir,
            ports=SuitePorts.free(),
            smarthost=f"127.0.0.1:{sink.port}",
            smarthost_tls="none",
            extra_env={"POSTWIRE_INTERNAL_TOKEN": INTERNAL_TOKEN, **env, **_passed_env(os.environ)},
            service_overrides=overrides,
        )
        suite.metrics_ports = {name: free_port() for name in SERVICES}
        suite.start_infrastructure()
        spawn_services(suite)
        with WebhookReceiver() as receiver:
            text = asyncio.run(
                _overload_only(
                    suite, sink, dns, receiver.url(WEBHOOK_PATH), args.rate, args.calls, args.singles
                )
            )
        print(f"CPU priorities: {priorities_text(overrides)}\n")
        print(text)
        return 0
    finally:
        if suite is not None:
            suite.stop()
        dns.stop()
        sink.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def _passed_env(environ: Mapping[str, str]) -> dict[str, str]:
    """POSTWIRE_* settings given to the bench reach every service (A/B of one setting)."""
    return {
        key: value for key, value in environ.items() if key.startswith("POSTWIRE_") and key not in _SUITE_OWNS
    }


_SUITE_OWNS = {"POSTWIRE_NATS_URL", "POSTWIRE_DATABASE_URL"}


if __name__ == "__main__":
    import sys

    sys.exit(main())
