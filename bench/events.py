"""`python -m bench.events`: what the events service costs per message, alone.

Starts a whole Suite (embedded NATS and PostgreSQL) with POSTWIRE_WEBHOOK_ALLOW_PRIVATE=127.0.0.0/8
(dev), a webhook receiver on loopback and a webhook for DELIVERED events, then publishes, open
loop at --rate messages per second, the two events a delivered message produces (ACCEPTED and
DELIVERED) straight onto the events stream, as submission and mta_worker would. Nothing else
runs, so the events service's CPU is not mixed with the send path's, and the fixed rate gives it
the small batches of a machine that is not saturated (the whole-pipeline bench under load hands it
big batches, which hides per-batch costs). Reports, per message (two events and one webhook):
the events process's CPU, PostgreSQL's and NATS's (process trees), and `xact_commit`.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import grpc
import nats
from postwire.internal.v1 import bus_pb2
from postwire.v1 import event_pb2

from bench.__main__ import (
    cpu_seconds,
    environment,
    exit_on_sigterm,
    positive,
    wait_ready,
)
from bench.side_by_side import Infra, xact_commits
from bench.webhooks import create_tenant, create_webhook, run_with_webhooks
from libs.bus import event_subject
from libs.embedded.suite import Suite
from libs.testing.webhook_receiver import WebhookReceiver

PATH = "/bench"
WARMUP_MESSAGES = 50
TICK_SECONDS = 0.01


def log(text: str) -> None:
    print(f"[bench.events] {text}", file=sys.stderr, flush=True)


def envelopes(tenant_id: str) -> list[tuple[str, bus_pb2.EventEnvelope]]:
    message_id = str(uuid.uuid4())
    out = []
    for kind, name in (
        (event_pb2.EVENT_TYPE_ACCEPTED, "accepted"),
        (event_pb2.EVENT_TYPE_DELIVERED, "delivered"),
    ):
        envelope = bus_pb2.EventEnvelope(
            tenant_id=tenant_id,
            event=event_pb2.Event(
                id=f"{message_id}:{name}",
                type=kind,
                message_id=message_id,
                recipient=f"to-{message_id[:8]}@example.org",
                stream="transactional",
            ),
        )
        envelope.event.create_time.GetCurrentTime()
        out.append((event_subject(tenant_id, name), envelope))
    return out


async def publish(nats_url: str, tenant_id: str, messages: int, rate: float) -> float:
    """Open loop: message i is published at start + i / rate. The sending's wall time."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    start = time.monotonic()
    sent = 0
    try:
        while sent < messages:
            due = min(messages, int((time.monotonic() - start) * rate) + 1)
            batch = [e for _ in range(due - sent) for e in envelopes(tenant_id)]
            sent = due
            await asyncio.gather(
                *(
                    js.publish(subject, e.SerializeToString(), headers={"Nats-Msg-Id": e.event.id})
                    for subject, e in batch
                )
            )
            await asyncio.sleep(TICK_SECONDS)
    finally:
        await nc.close()
    return time.monotonic() - start


async def wait_for(receiver: WebhookReceiver, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while len(receiver.requests(PATH)) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(receiver.requests(PATH))}/{count} webhooks arrived")
        await asyncio.sleep(0.05)


async def measure(suite: Suite, receiver: WebhookReceiver, messages: int, rate: float) -> list[str]:
    await wait_ready(suite)
    assert suite.nats_url and suite.database_url
    tenant = await create_tenant(suite)
    async with grpc.aio.insecure_channel(suite.ports.addr("edge")) as channel:
        await create_webhook(channel, tenant, receiver.url(PATH))
    log(f"warming up with {WARMUP_MESSAGES} messages…")
    await publish(suite.nats_url, tenant.id, WARMUP_MESSAGES, rate)
    await wait_for(receiver, WARMUP_MESSAGES, 60)
    await asyncio.sleep(11)  # PostgreSQL flushes idle backends' statistics within 10 s
    infra = Infra(dict(suite.infra_pids))
    events_pid = suite.processes["events"].pid
    before = (cpu_seconds(events_pid), infra.snapshot(), await xact_commits(suite.database_url))
    log(f"publishing {messages} messages at {rate:g}/s…")
    wall = await publish(suite.nats_url, tenant.id, messages, rate)
    await wait_for(receiver, WARMUP_MESSAGES + messages, 60 + messages / rate)
    events_cpu = cpu_seconds(events_pid) - before[0]
    infra_cpu = {k: v - before[1].get(k, 0.0) for k, v in infra.snapshot().items()}
    await asyncio.sleep(11)
    xacts = await xact_commits(suite.database_url) - before[2]

    def per(seconds: float) -> str:
        return f"{seconds * 1000 / messages:.2f}"

    return [
        "# Events service alone (`python -m bench.events`)",
        "",
        *environment(),
        "",
        "| messages | rate/s | events CPU ms/msg | postgres CPU ms/msg | nats CPU ms/msg | PG commits/msg |",
        "|---:|---:|---:|---:|---:|---:|",
        f"| {messages} | {messages / wall:.0f} | {per(events_cpu)} | {per(infra_cpu.get('postgres', 0.0))}"
        f" | {per(infra_cpu.get('nats', 0.0))} | {xacts / messages:.2f} |",
        "",
        "CPU from the first publish to the last webhook received; commits include the 11 s after it.",
    ]


def run(messages: int, rate: float) -> list[str]:
    return run_with_webhooks(
        "postwire-bench-events-", lambda suite, receiver: measure(suite, receiver, messages, rate)
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.events", description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=positive, default=3000, help="messages (default 3000)")
    parser.add_argument("--rate", type=positive, default=100, help="messages per second (default 100)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/events.md"), help="report file")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    text = "\n".join(run(args.messages, args.rate)) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
