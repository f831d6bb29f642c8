"""`python -m bench.recovery`: how long the pipeline takes to recover a JetStream store wipe.

Starts its own NATS, PostgreSQL, SMTP sink and services; stops the router so that N accepted
messages sit in the work stream; stops NATS, deletes its store and starts it empty on the same
port; starts the router again; and times from "NATS is back" until every message is at the
sink. Only the PostgreSQL sweepers can bring the messages back, so this measures them.
Target (issue 9 item 4): <= POSTWIRE_STALL_SECONDS + 10 s for 2,000 messages.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
import grpc
from postwire.v1 import mail_service_pb2_grpc

from bench.__main__ import (
    MESSAGE_ID_HEADER,
    create_api_key,
    make_suite,
    send_many,
    spawn_services,
    wait_ready,
    wait_serving,
)
from libs.capture import SmtpSink
from libs.embedded.nats_server import start_nats
from libs.embedded.process import ManagedProcess
from libs.embedded.suite import Suite

POLL_SECONDS = 0.1


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def measure(
    suite: Suite, sink: SmtpSink, nats: list[ManagedProcess], *, messages: int, stall: float, wipe: bool
) -> float:
    """`nats` holds the running NATS process; the wipe replaces it there."""
    assert suite.nats_url
    nats_url = suite.nats_url
    await wait_ready(suite)
    api_key = await create_api_key(suite)
    suite.processes["router"].stop(timeout=30)
    log(f"router stopped; sending {messages} messages into the work stream…")
    async with grpc.aio.insecure_channel(suite.ports.addr("edge")) as channel:
        phase = await send_many(mail_service_pb2_grpc.MailServiceStub(channel), api_key, messages, 64)
    if phase.errors:
        raise RuntimeError(f"{sum(phase.errors.values())} SendEmail calls failed: {dict(phase.errors)}")
    expected = {s.message_id for s in phase.sent}
    log(
        f"sent in {phase.wall_seconds:.1f} s; "
        + ("wiping the JetStream store…" if wipe else "restarting NATS…")
    )
    nats[0].stop(timeout=30)
    if wipe:
        shutil.rmtree(suite.data_dir / "nats" / "jetstream")
    nats[0], _ = start_nats(suite.data_dir / "nats", port=int(nats_url.rpartition(":")[2]))
    back = time.monotonic()
    suite.start_service("router", wait=False)
    await wait_serving(suite, "router")
    log(f"NATS back; router up after {time.monotonic() - back:.1f} s; waiting for delivery…")
    reported = back
    while True:
        delivered = {m.header(MESSAGE_ID_HEADER) for m in sink.messages()} & expected
        now = time.monotonic()
        if len(delivered) == len(expected):
            seconds = now - back
            log(f"all {len(expected)} delivered {seconds:.1f} s after NATS came back")
            return seconds
        if now - reported >= 5:
            waiting = await _still_accepted(suite)
            log(
                f"  {now - back:5.1f} s: {len(delivered)} of {len(expected)} delivered, {waiting} not yet routed"
            )
            reported = now
        if now - back > 10 * stall + 300:
            raise TimeoutError(f"only {len(delivered)} of {len(expected)} delivered")
        await asyncio.sleep(POLL_SECONDS)


async def _still_accepted(suite: Suite) -> int:
    assert suite.database_url
    conn = await asyncpg.connect(suite.database_url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM messages WHERE state = 'accepted'"))
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--stall", type=float, default=30.0, help="POSTWIRE_STALL_SECONDS for the services")
    parser.add_argument(
        "--no-wipe", action="store_true", help="restart NATS keeping its store: the baseline to compare with"
    )
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="postwire-recovery-"))
    sink = SmtpSink("127.0.0.1", 0, scripted=False)
    sink.start()
    proc, nats_url = start_nats(data_dir / "nats")
    nats = [proc]
    suite = make_suite(data_dir, sink)
    suite.nats_url = nats_url
    suite.extra_env = {**suite.extra_env, "POSTWIRE_STALL_SECONDS": str(args.stall)}
    try:
        suite.start_infrastructure()
        spawn_services(suite)
        seconds = asyncio.run(
            measure(suite, sink, nats, messages=args.messages, stall=args.stall, wipe=not args.no_wipe)
        )
    finally:
        suite.stop()
        nats[0].stop(timeout=30)
        sink.stop()
    shutil.rmtree(data_dir, ignore_errors=True)
    if args.no_wipe:
        print(f"delivered {args.messages} queued messages after a plain NATS restart in {seconds:.1f} s")
        return
    verdict = "meets" if seconds <= args.stall + 10 else "MISSES"
    print(
        f"recovered {args.messages} messages after a JetStream store wipe in {seconds:.1f} s"
        f" (stall {args.stall:.0f} s; target <= {args.stall + 10:.0f} s: {verdict})"
    )
    if seconds > args.stall + 10:
        sys.exit(1)


if __name__ == "__main__":
    main()
