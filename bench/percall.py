"""Per-call costs of issue 14's "cpu" changes, as A/B figures (`python -m bench.percall`).

Three micro-benchmarks, each one knob off and on in the same process, client CPU by
`time.process_time` and PostgreSQL commits by `pg_stat_database.xact_commit`:

- spans: a NATS publish span and a consumer span without an exporter, recorded (the SDK's
  default sampler, before) against dropped (`libs.telemetry.sampler_from_env`, now);
- pool: acquire, one query, release, with asyncpg's reset query on release (before) and without
  (`libs.db.connect_pool`, now);
- events: storing events one transaction each (before) against `EventsStore.store_many` batches of
  64 (now).

`--suite N` also runs the whole suite and sends N messages through the edge, reporting PostgreSQL
commits and services' CPU per delivered message: run it on the old and the new commit to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import grpc
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from postwire.internal.v1 import bus_pb2
from postwire.v1 import event_pb2, mail_service_pb2_grpc

from bench.__main__ import (
    REPO,
    await_deliveries,
    cpu_snapshot,
    create_api_key,
    delivery_cap,
    make_suite,
    send_many,
    service_usage,
    spawn_services,
    wait_ready,
    warm_up,
)
from libs import telemetry
from libs.capture import SmtpSink
from libs.db import apply_migrations, connect_pool
from libs.embedded.postgres import start_postgres
from libs.embedded.suite import Suite


def commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    return out.stdout.strip()


def cpu_us(rounds: int, body: Callable[[], None]) -> float:
    start = time.process_time()
    for _ in range(rounds):
        body()
    return (time.process_time() - start) / rounds * 1e6


def spans(rounds: int = 20_000) -> list[str]:
    lines = []
    for label, provider in (
        ("recorded (before)", TracerProvider()),
        ("dropped (now)", TracerProvider(sampler=ALWAYS_OFF)),
    ):
        tracer = provider.get_tracer("bench")
        telemetry.tracer = lambda tracer=tracer: tracer  # type: ignore[misc]

        def one() -> None:
            headers: dict[str, str] = {}
            with telemetry.publish_span("postwire.work.route", headers) as span:
                span.set_attribute("messaging.message.id", "x")
            with telemetry.consume_span("postwire.work.route", headers):
                pass

        cpu_us(1000, one)
        lines.append(f"| spans: publish + consume span pair, {label} | {cpu_us(rounds, one):.1f} µs CPU |")
        provider.shutdown()
    return lines


async def xact_commits(conn: asyncpg.Connection, *, settle: float = 1.2) -> int:
    # A busy backend reports its counters at most once a second, an idle one within 10 s; wait
    # for them, then read afresh.
    await asyncio.sleep(settle)
    await conn.execute("SELECT pg_stat_clear_snapshot()")
    return int(
        await conn.fetchval("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
    )


async def measured(url: str, label: str, count: int, unit: str, work: Callable[[], Awaitable[float]]) -> str:
    """`work` opens its own pool, runs, closes the pool (a backend flushes its counters on exit)
    and answers the client CPU seconds of the part it measures."""
    stats = await asyncpg.connect(url)
    try:
        before = await xact_commits(stats)
        cpu = await work()
        # The reading itself is one commit, on the stats connection.
        commits = await xact_commits(stats) - before - 1
    finally:
        await stats.close()
    return f"| {label} | {cpu / count * 1e6:.0f} µs client CPU/{unit}, {commits / count:.2f} commits/{unit} |"


async def pool_cases(url: str, rounds: int = 3000) -> list[str]:
    lines = []
    for label, with_reset in (
        ("pool: acquire, query, release with asyncpg's reset (before)", True),
        ("pool: without the reset query (now)", False),
    ):

        async def cycles(with_reset: bool = with_reset) -> float:
            pool = await (
                asyncpg.create_pool(url, min_size=1, max_size=1)
                if with_reset
                else connect_pool(url, min_size=1, max_size=1)
            )
            start = time.process_time()
            for n in range(rounds):
                async with pool.acquire() as conn:
                    await conn.fetchval("SELECT $1::int", n)
            cpu = time.process_time() - start
            await pool.close()
            return cpu

        lines.append(await measured(url, label, rounds, "cycle", cycles))
    return lines


def envelope(tenant_id: str) -> bus_pb2.EventEnvelope:
    message_id = str(uuid.uuid4())
    env = bus_pb2.EventEnvelope(
        tenant_id=tenant_id,
        event=event_pb2.Event(
            id=f"{message_id}:0:0:delivered",
            type=event_pb2.EVENT_TYPE_DELIVERED,
            message_id=message_id,
            recipient="someone@example.com",
        ),
    )
    env.event.create_time.GetCurrentTime()
    return env


async def event_cases(url: str, count: int = 2048, batch: int = 64) -> list[str]:
    # Imported here so `--no-micro --suite` also runs on the old commit, which has no Arrival.
    from services.events.store import Arrival, EventsStore

    tenant = str(uuid.uuid4())
    singles = [envelope(tenant) for _ in range(count)]
    batched = [Arrival(envelope(tenant)) for _ in range(count)]

    async def one_by_one() -> float:
        pool = await connect_pool(url, min_size=1, max_size=1)
        store, start = EventsStore(pool), time.process_time()
        for e in singles:
            await store.store(e)
        cpu = time.process_time() - start
        await pool.close()
        return cpu

    async def in_batches() -> float:
        pool = await connect_pool(url, min_size=1, max_size=1)
        store, start = EventsStore(pool), time.process_time()
        for first in range(0, count, batch):
            await store.store_many(batched[first : first + batch])
        cpu = time.process_time() - start
        await pool.close()
        return cpu

    return [
        await measured(url, "events: one transaction per event (before)", count, "event", one_by_one),
        await measured(url, f"events: store_many, batches of {batch} (now)", count, "event", in_batches),
    ]


def suite_case(messages: int, concurrency: int) -> list[str]:
    data_dir = Path(tempfile.mkdtemp(prefix="postwire-percall-"))
    sink = SmtpSink("127.0.0.1", 0, scripted=False)
    sink.start()
    suite = make_suite(data_dir, sink)
    try:
        suite.start_infrastructure()
        spawn_services(suite)
        return asyncio.run(suite_measure(suite, sink, messages, concurrency))
    finally:
        suite.stop()
        sink.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


async def suite_measure(suite: Suite, sink: SmtpSink, messages: int, concurrency: int) -> list[str]:
    await wait_ready(suite)
    assert suite.database_url
    api_key = await create_api_key(suite)
    stats = await asyncpg.connect(suite.database_url)
    try:
        async with grpc.aio.insecure_channel(suite.ports.addr("edge")) as channel:
            stub = mail_service_pb2_grpc.MailServiceStub(channel)
            await warm_up(stub, api_key, sink, concurrency)
            commits_before, cpu_before = await xact_commits(stats, settle=11), cpu_snapshot(suite)
            start = time.monotonic()
            phase = await send_many(stub, api_key, messages, concurrency)
            found = await await_deliveries(
                sink, {s.message_id for s in phase.sent}, cap_seconds=delivery_cap(messages)
            )
            wall = time.monotonic() - start
            usage = service_usage(suite, cpu_before)
            commits = await xact_commits(stats, settle=11) - commits_before
    finally:
        await stats.close()
    delivered = len(found.received_at)
    cpu_ms = sum(u.cpu_seconds for u in usage.values()) / max(delivered, 1) * 1e3
    return [
        f"| suite: {messages} SendEmail, {concurrency} in flight | {delivered} delivered,"
        f" {delivered / wall:.0f} msg/s, {commits / max(delivered, 1):.2f} commits/msg"
        f", services {cpu_ms:.2f} ms CPU/msg |"
    ]


async def micro(data_dir: Path) -> list[str]:
    proc, url = start_postgres(data_dir / "postgres", port=0)
    try:
        await apply_migrations(url)
        return [*await pool_cases(url), *await event_cases(url)]
    finally:
        proc.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", type=int, default=0, metavar="N", help="also send N messages through a suite")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--micro", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()
    lines = [f"commit {commit()}", "", "| case | result |", "|:---|:---|"]
    if args.micro:
        lines += spans()
        data_dir = Path(tempfile.mkdtemp(prefix="postwire-percall-"))
        try:
            lines += asyncio.run(micro(data_dir))
        finally:
            shutil.rmtree(data_dir, ignore_errors=True)
    if args.suite:
        lines += suite_case(args.suite, args.concurrency)
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main()
