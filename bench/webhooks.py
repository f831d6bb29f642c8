"""`python -m bench.webhooks`: how fast events become signed webhook deliveries.

Starts its own SMTP sink, webhook receiver (loopback, answers 200) and a whole Suite (embedded NATS
and PostgreSQL unless POSTWIRE_NATS_URL / POSTWIRE_DATABASE_URL point elsewhere) with
POSTWIRE_WEBHOOK_ALLOW_PRIVATE=127.0.0.0/8 (dev), creates a tenant and a webhook for DELIVERED
events through the edge, warms up, sends N messages with C calls in flight and waits until the
receiver has one delivery per message. Reports events stored per second (from PostgreSQL), webhook
deliveries per second, and event→webhook latency (the event's create_time to the moment the
receiver had the whole request), as a markdown table printed and written to --out. Every delivery
is verified with the reference `standardwebhooks` library; a bad signature, a duplicate or a
missing delivery is listed under Problems and makes the exit status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import grpc
from postwire.v1 import (
    admin_service_pb2,
    admin_service_pb2_grpc,
    event_pb2,
    mail_service_pb2_grpc,
    webhook_service_pb2,
    webhook_service_pb2_grpc,
)
from standardwebhooks import Webhook, WebhookVerificationError

from bench.__main__ import (
    ADMIN_TOKEN,
    SendPhase,
    environment,
    exit_on_sigterm,
    make_suite,
    ms,
    positive,
    rate,
    send_many,
    spawn_services,
    table,
    wait_ready,
)
from bench.compare import percentile
from libs.capture import SmtpSink
from libs.embedded.suite import Suite
from libs.testing.webhook_receiver import WebhookReceiver, WebhookRequest

DEFAULT_OUT = Path("bench/results/webhooks.md")
PATH = "/bench"
WARMUP_MESSAGES = 20
# Gives up when no delivery has arrived for this long, or at the cap, whichever comes first.
STALL_SECONDS = 60.0
CAP_BASE_SECONDS = 300.0
CAP_PER_MESSAGE_SECONDS = 0.5
POLL_SECONDS = 0.1
T = TypeVar("T")


def log(text: str) -> None:
    print(f"[bench.webhooks] {text}", file=sys.stderr, flush=True)


@dataclass(frozen=True, slots=True)
class Tenant:
    id: str
    api_key: str

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.api_key}"),)


@dataclass
class Report:
    messages: int
    concurrency: int
    phase: SendPhase
    deliveries: list[WebhookRequest]  # to the bench path, from the measured run, in arrival order
    events_by_type: Counter[str]
    events_seconds: float  # first SendEmail call → the last stored event of the run's messages
    expected: int
    timed_out: bool
    problems: list[str] = field(default_factory=list)


async def create_tenant(suite: Suite) -> Tenant:
    auth = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
    async with grpc.aio.insecure_channel(suite.ports.addr("edge")) as channel:
        stub = admin_service_pb2_grpc.AdminServiceStub(channel)
        made = await stub.CreateTenant(
            admin_service_pb2.CreateTenantRequest(
                tenant=admin_service_pb2.Tenant(name=f"bench-{uuid.uuid4().hex[:8]}")
            ),
            metadata=auth,
            timeout=10,
        )
        key = await stub.CreateApiKey(
            admin_service_pb2.CreateApiKeyRequest(
                tenant_id=made.tenant.id, scopes=["send", "webhooks:read", "webhooks:write"]
            ),
            metadata=auth,
            timeout=10,
        )
    return Tenant(made.tenant.id, key.secret)


async def create_webhook(channel: grpc.aio.Channel, tenant: Tenant, url: str) -> str:
    """The webhook's signing secret."""
    stub = webhook_service_pb2_grpc.WebhookServiceStub(channel)
    created = await stub.CreateWebhook(
        webhook_service_pb2.CreateWebhookRequest(
            webhook=webhook_service_pb2.Webhook(url=url, event_types=[event_pb2.EVENT_TYPE_DELIVERED])
        ),
        metadata=tenant.metadata,
        timeout=10,
    )
    secret: str = created.secret
    return secret


async def await_deliveries(
    receiver: WebhookReceiver, skip: int, count: int
) -> tuple[list[WebhookRequest], bool]:
    """The deliveries after the first `skip`, once `count` have arrived; True when it gave up."""
    deadline = time.monotonic() + CAP_BASE_SECONDS + CAP_PER_MESSAGE_SECONDS * count
    seen, last_progress = 0, time.monotonic()
    while True:
        arrived = receiver.requests(PATH)[skip:]
        if len(arrived) >= count:
            return arrived, False
        if len(arrived) > seen:
            seen, last_progress = len(arrived), time.monotonic()
        now = time.monotonic()
        if now > deadline or now - last_progress > STALL_SECONDS:
            return arrived, True
        await asyncio.sleep(POLL_SECONDS)


async def stored_events(
    database_url: str, tenant_id: str, message_ids: Sequence[str]
) -> tuple[Counter[str], float]:
    """Events stored for these messages by type, and the wall-clock time of the last one."""
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT type, create_time FROM events WHERE tenant_id = $1 AND message_id = ANY($2::uuid[])",
            uuid.UUID(tenant_id),
            list(message_ids),
        )
    finally:
        await conn.close()
    by_type: Counter[str] = Counter(event_pb2.EventType.Name(row["type"]) for row in rows)
    last = max((row["create_time"].timestamp() for row in rows), default=0.0)
    return by_type, last


def check(deliveries: Sequence[WebhookRequest], secret: str, expected: set[str]) -> list[str]:
    """Signatures, duplicates and strays among the deliveries."""
    verifier = Webhook(secret)
    bad, strays = 0, 0
    ids: Counter[str] = Counter()
    for delivery in deliveries:
        try:
            verifier.verify(delivery.body, dict(delivery.headers))
        except WebhookVerificationError:
            bad += 1
        ids[delivery.headers.get("webhook-id", "")] += 1
        if json.loads(delivery.body)["data"].get("messageId") not in expected:
            strays += 1
    lines = []
    if bad:
        lines.append(f"- **Signatures that do not verify**: {bad}")
    duplicates = sum(n - 1 for n in ids.values() if n > 1)
    if duplicates:
        lines.append(f"- **Duplicate deliveries** (same webhook-id): {duplicates}")
    if strays:
        lines.append(f"- **Deliveries for messages of no accepted call**: {strays}")
    return lines


async def measure(suite: Suite, receiver: WebhookReceiver, messages: int, concurrency: int) -> Report:
    await wait_ready(suite)
    tenant = await create_tenant(suite)
    async with grpc.aio.insecure_channel(suite.ports.addr("edge")) as channel:
        secret = await create_webhook(channel, tenant, receiver.url(PATH))
        mail = mail_service_pb2_grpc.MailServiceStub(channel)
        log(f"warming up with {WARMUP_MESSAGES} messages…")
        warm = await send_many(mail, tenant.api_key, WARMUP_MESSAGES, concurrency)
        _, gave_up = await await_deliveries(receiver, 0, len(warm.sent))
        if gave_up or not warm.sent:
            raise RuntimeError(f"warm-up: {len(receiver.requests(PATH))}/{len(warm.sent)} webhooks arrived")
        skip = len(receiver.requests(PATH))
        log(f"sending {messages} messages, {concurrency} in flight…")
        phase = await send_many(mail, tenant.api_key, messages, concurrency)
        log(f"accepted {len(phase.sent)} in {phase.wall_seconds:.1f}s; waiting for webhooks…")
        deliveries, timed_out = await await_deliveries(receiver, skip, len(phase.sent))
    expected = {s.message_id for s in phase.sent}
    assert suite.database_url
    by_type, last_event = await stored_events(suite.database_url, tenant.id, sorted(expected))
    report = Report(
        messages=messages,
        concurrency=concurrency,
        phase=phase,
        deliveries=deliveries,
        events_by_type=by_type,
        events_seconds=last_event - phase.started_at,
        expected=len(expected),
        timed_out=timed_out,
    )
    report.problems = problems(report) + check(deliveries, secret, expected)
    return report


def run(messages: int, concurrency: int) -> Report:
    return run_with_webhooks(
        "postwire-bench-webhooks-", lambda suite, receiver: measure(suite, receiver, messages, concurrency)
    )


def run_with_webhooks(prefix: str, measure: Callable[[Suite, WebhookReceiver], Coroutine[Any, Any, T]]) -> T:
    """`measure` against a suite that may deliver webhooks to loopback, and a receiver there."""
    data_dir = Path(tempfile.mkdtemp(prefix=prefix))
    sink = SmtpSink("127.0.0.1", 0, scripted=False)
    suite: Suite | None = None
    keep_logs = False

    try:
        sink.start()
        suite = make_suite(data_dir, sink, {"POSTWIRE_WEBHOOK_ALLOW_PRIVATE": "127.0.0.0/8"})
        log("starting NATS, PostgreSQL and the services…")
        suite.start_infrastructure()
        spawn_services(suite)
        # Its own thread and loop: a delivery's arrival time is not held up by the bench's calls.
        with WebhookReceiver() as receiver:
            return asyncio.run(measure(suite, receiver))
    except Exception:
        keep_logs = True
        raise
    finally:
        if suite is not None:
            suite.stop()
        sink.stop()
        if keep_logs:
            log(f"run failed; service logs kept in {data_dir / 'logs'}")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)


def latencies(report: Report) -> list[float]:
    """Event create_time (in the body) → the receiver had the whole request, in seconds."""
    return [
        delivery.time - datetime.fromisoformat(json.loads(delivery.body)["timestamp"]).timestamp()
        for delivery in report.deliveries
    ]


def problems(report: Report) -> list[str]:
    phase = report.phase
    lines = []
    if phase.errors:
        counts = ", ".join(f"{kind}: {n}" for kind, n in phase.errors.most_common())
        lines.append(f"- **SendEmail errors**: {counts}")
        lines += [f"  - e.g. `{sample}`" for sample in phase.error_samples]
    missing = report.expected - len({d.headers.get("webhook-id") for d in report.deliveries})
    if report.timed_out or missing > 0:
        lines.append(
            f"- **Webhooks missing**: {max(missing, 0)} accepted message(s) got no DELIVERED webhook"
        )
    return lines


def render(report: Report) -> str:
    phase = report.phase
    lat = latencies(report)
    last = max((d.time for d in report.deliveries), default=phase.started_at)
    stored = sum(report.events_by_type.values())
    header = [
        "messages",
        "concurrency",
        "events stored",
        "events stored/s",
        "webhooks delivered",
        "webhooks/s",
        "event→webhook p50 ms",
        "event→webhook p99 ms",
        "event→webhook max ms",
    ]
    row = [
        str(report.messages),
        str(report.concurrency),
        str(stored),
        rate(stored, report.events_seconds),
        str(len(report.deliveries)),
        rate(len(report.deliveries), last - phase.started_at),
        ms(percentile(lat, 50)),
        ms(percentile(lat, 99)),
        ms(max(lat, default=None)),
    ]
    kinds = ", ".join(
        f"{name.removeprefix('EVENT_TYPE_').lower()} {n}" for name, n in sorted(report.events_by_type.items())
    )
    lines = ["# Postwire webhook benchmark", "", *environment(), "", *table(header, [row]), ""]
    lines += [
        f"Events stored for the run's messages: {kinds or 'none'}. Rates are counted from the first "
        "SendEmail call to the last stored event (events) or the last webhook received (webhooks); "
        "one DELIVERED webhook per message, to one endpoint on loopback answering 200.",
        "",
    ]
    lines += (
        ["Problems:", "", *report.problems]
        if report.problems
        else ["No problems: one verified delivery per accepted message, no duplicates."]
    )
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.webhooks", description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=positive, default=1000, help="messages to send (default 1000)")
    parser.add_argument("--concurrency", type=positive, default=32, help="calls in flight (default 32)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"report file (default {DEFAULT_OUT})")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    report = run(args.messages, args.concurrency)
    text = render(report)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    log(f"written to {args.out}")
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
