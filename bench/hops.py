"""Where a message's send→delivered time goes, hop by hop, at a given open-loop rate.

    python -m bench.hops --rate 100 --messages 1000

The production-shaped suite (bench.production) with one difference: the services export their
spans to a local OTLP receiver, which costs some CPU (about 1.5 ms per message). Each SendEmail
carries a trace of its own (a `traceparent` the client makes), so every span of the message's
path is found by its trace id. Per span kind (service, name) the table gives when it started and
how long it took, in ms from the client's call start, p50 / p90 / p99 over the messages, in
order of median start; the last row is the SMTP sink's arrival time. Read the gaps between one
row's end and the next row's start as queueing or hand-off, the durations as work or waits
inside a step.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import secrets
import shutil
import statistics
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from postwire.v1 import mail_service_pb2_grpc

from bench import peer
from bench.__main__ import (
    ADMIN_TOKEN,
    INTERNAL_TOKEN,
    await_deliveries,
    build_request,
    delivery_cap,
    log,
    spawn_services,
    table,
    wait_ready,
)
from bench.compare import percentile
from bench.production import WEBHOOK_PATH, front_door_overrides, make_sender, production_env, production_suite
from libs.capture import SmtpSink
from libs.embedded.suite import Suite
from libs.testing.dns_server import LoopbackDns
from libs.testing.otlp_receiver import OtlpReceiver, ReceivedSpan
from libs.testing.webhook_receiver import WebhookReceiver

WARMUP = 200
SPAN_SETTLE_SECONDS = 3.0


@dataclass
class Traced:
    message_id: str
    trace_id: str
    started_ns: int
    accepted_ns: int


@dataclass
class Hops:
    starts: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    durations: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))


def _triple(values: list[float]) -> str:
    return " / ".join(f"{percentile(values, q) or 0.0:.1f}" for q in (50, 90, 99))


def collect(traced: list[Traced], spans: list[ReceivedSpan], arrivals: dict[str, float]) -> Hops:
    by_trace: dict[str, list[ReceivedSpan]] = defaultdict(list)
    for span in spans:
        by_trace[span.trace_id].append(span)
    hops = Hops()
    for sent in traced:
        origin = sent.started_ns
        if sent.trace_id:
            _add_spans(hops, by_trace.get(sent.trace_id, []), origin)
        hops.starts["client: answer received"].append((sent.accepted_ns - origin) / 1e6)
        hops.durations["client: answer received"].append(0.0)
        if sent.message_id in arrivals:
            hops.starts["sink: message received"].append((arrivals[sent.message_id] * 1e9 - origin) / 1e6)
            hops.durations["sink: message received"].append(0.0)
    return hops


def _add_spans(hops: Hops, spans: list[ReceivedSpan], origin: int) -> None:
    # A kind of span that occurs more than once in one message's trace (retries, one per
    # recipient) counts from its first start to its last end.
    first: dict[str, tuple[int, int]] = {}
    for span in spans:
        key = f"{span.service.removeprefix('postwire-')}: {span.name}"
        start, end = first.get(key, (span.start_ns, span.end_ns))
        first[key] = (min(start, span.start_ns), max(end, span.end_ns))
    for key, (start, end) in first.items():
        hops.starts[key].append((start - origin) / 1e6)
        hops.durations[key].append((end - start) / 1e6)


def render(hops: Hops, messages: int, rate: float) -> str:
    rows = []
    for key in sorted(hops.starts, key=lambda k: statistics.median(hops.starts[k])):
        starts = hops.starts[key]
        rows.append([key, str(len(starts)), _triple(starts), _triple(hops.durations[key])])
    lines = [
        f"# Hops at {rate:g} msg/s, {messages} messages (ms from the client's call start)",
        "",
        *table(["span (service: name)", "seen", "start p50 / p90 / p99", "duration p50 / p90 / p99"], rows),
    ]
    return "\n".join(lines) + "\n"


async def traced_sends(
    stub: mail_service_pb2_grpc.MailServiceAsyncStub,
    metadata: tuple[tuple[str, str], ...],
    from_address: str,
    count: int,
    rate: float,
    share: float,
) -> list[Traced]:
    run = uuid.uuid4().hex[:8]
    requests = iter([build_request(run, i, from_address) for i in range(count)])
    traced: list[Traced] = []

    async def one() -> None:
        trace_id = secrets.token_hex(16)
        # The services' parent-based sampler follows the caller's flag (01 sampled, 00 not): a
        # share of the messages is traced, so exporting spans adds little to the load measured.
        sampled = random.random() < share
        parent = f"00-{trace_id}-{secrets.token_hex(8)}-{'01' if sampled else '00'}"
        started = time.time_ns()
        answer = await stub.SendEmail(
            next(requests), metadata=(*metadata, ("traceparent", parent)), timeout=30
        )
        traced.append(Traced(answer.message_id, trace_id if sampled else "", started, time.time_ns()))

    await peer.pace(one, count, rate)
    return traced


async def measure(
    suite: Suite,
    sink: SmtpSink,
    dns: LoopbackDns,
    receiver: WebhookReceiver,
    otlp: OtlpReceiver,
    args: argparse.Namespace,
) -> str:
    await wait_ready(suite)
    async with grpc.aio.insecure_channel(suite.ports.addr("edge")) as channel:
        stub = mail_service_pb2_grpc.MailServiceStub(channel)
        sender = await make_sender(channel, ADMIN_TOKEN, dns, receiver.url(WEBHOOK_PATH))
        metadata = (("authorization", f"Bearer {sender.api_key}"),)
        log(f"warming up with {WARMUP} messages at {args.rate:g}/s…")
        warm = await traced_sends(stub, metadata, sender.from_address, WARMUP, args.rate, args.sample)
        await await_deliveries(sink, {t.message_id for t in warm}, cap_seconds=delivery_cap(WARMUP))
        sink.clear()
        log(f"{args.messages} messages at {args.rate:g}/s…")
        traced = await traced_sends(
            stub, metadata, sender.from_address, args.messages, args.rate, args.sample
        )
        found = await await_deliveries(
            sink, {t.message_id for t in traced}, cap_seconds=delivery_cap(args.messages)
        )
        await asyncio.sleep(SPAN_SETTLE_SECONDS)
    return render(collect(traced, otlp.spans(), found.received_at), args.messages, args.rate)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hops", description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=100.0, help="SendEmail calls per second, open loop")
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--sample", type=float, default=0.1, help="share of the messages traced")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for every service (A/B runs)",
    )
    parser.add_argument(
        "--service-env",
        action="append",
        default=[],
        metavar="SERVICE:NAME=VALUE",
        help="a setting for one service (A/B runs)",
    )
    args = parser.parse_args(argv)
    data_dir = Path(tempfile.mkdtemp(prefix="postwire-hops-"))
    sink = SmtpSink("127.0.0.1", 0, scripted=False)
    dns = LoopbackDns()
    otlp = OtlpReceiver()
    suite: Suite | None = None
    try:
        sink.start()
        dns.start()
        otlp.start()
        env = production_env(ADMIN_TOKEN, dns) | {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{otlp.port}",
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
        }
        env |= dict(setting.split("=", 1) for setting in args.env)
        overrides = front_door_overrides()
        for setting in args.service_env:
            service, _, assignment = setting.partition(":")
            name, _, value = assignment.partition("=")
            overrides[service] = {**overrides.get(service, {}), name: value}
        suite = production_suite(data_dir, sink, env, overrides, INTERNAL_TOKEN)
        suite.start_infrastructure()
        spawn_services(suite)
        with WebhookReceiver() as receiver:
            print(asyncio.run(measure(suite, sink, dns, receiver, otlp, args)))
        return 0
    finally:
        if suite is not None:
            suite.stop()
        otlp.stop()
        dns.stop()
        sink.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
