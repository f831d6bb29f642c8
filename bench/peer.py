"""The Postfix side of the comparison: the same ~2 KB message relayed through a private Postfix
into the bench's sink, at the same concurrency, timed the way the Postwire cases are.

Throughput uses `smtp-source` (C, a new connection per message, as in the anchor runs) so the load
generator costs little; the latency cases need a time per message, so they submit with aiosmtplib
and tag each message with a header the sink is matched on.
"""

from __future__ import annotations

import asyncio
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any

import aiosmtplib

from bench.postfix import PostfixRelay, smtp_source_command
from libs.capture import SmtpSink

RUN_HEADER = "X-Bench-Run"
ID_HEADER = "X-Bench-Id"
SENDER = "bench@postfix-bench.example"
STALL_SECONDS = 60.0
POLL_SECONDS = 0.05


def message_text(body: str, *, run: str, message_id: str = "", recipient: str = "rcpt@example.com") -> str:
    """The message Postfix relays: the headers a client would send and the bench's 2 KB body."""
    headers = [
        f"From: Postwire Bench <{SENDER}>",
        f"To: <{recipient}>",
        "Subject: Bench message",
        f"Date: {formatdate(localtime=False)}",
        f"Message-ID: {make_msgid(domain='postfix-bench.example')}",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 7bit",
        f"{RUN_HEADER}: {run}",
    ]
    if message_id:
        headers.append(f"{ID_HEADER}: {message_id}")
    return "\n".join(headers) + "\n\n" + body


@dataclass
class PeerRun:
    """What one Postfix case produced: per-message latencies (seconds) where the case times them."""

    messages: int
    delivered: int = 0
    started_at: float = 0.0
    last_arrival: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    machine_busy_seconds: float = 0.0

    @property
    def seconds(self) -> float:
        return self.last_arrival - self.started_at


def arrivals(sink: SmtpSink, run: str) -> list[float]:
    return [m.received_at for m in sink.messages() if m.header(RUN_HEADER) == run]


async def await_run(sink: SmtpSink, run: str, count: int) -> list[float]:
    """Arrival times of this run's messages once `count` are in, or when nothing came for a minute."""
    seen, last_progress = 0, time.monotonic()
    while True:
        got = arrivals(sink, run)
        if len(got) >= count:
            return got
        if len(got) > seen:
            seen, last_progress = len(got), time.monotonic()
        elif time.monotonic() - last_progress > STALL_SECONDS:
            return got
        await asyncio.sleep(POLL_SECONDS)


async def throughput(relay: PostfixRelay, sink: SmtpSink, body: str, messages: int, sessions: int) -> PeerRun:
    """`messages` through smtp-source with `sessions` in parallel; delivered/s at the sink."""
    run = uuid.uuid4().hex[:8]
    message_file = relay.layout.root / f"message-{run}.txt"
    message_file.write_text(message_text(body, run=run))
    command = smtp_source_command(
        relay.layout.listen_port,
        messages=messages,
        sessions=sessions,
        message_file=message_file,
        sender=SENDER,
        recipient="rcpt@example.com",
    )
    result = PeerRun(messages, started_at=time.time())
    done = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        result.errors = messages
        raise RuntimeError(f"smtp-source failed ({done.returncode}): {done.stderr[-500:]}")
    got = await await_run(sink, run, messages)
    result.delivered = len(got)
    result.last_arrival = max(got, default=result.started_at)
    return result


async def submit_one(port: int, body: str, run: str) -> tuple[str, float]:
    """One message on its own connection; its id and when the client started."""
    message_id = uuid.uuid4().hex
    started = time.time()
    await aiosmtplib.send(
        message_text(body, run=run, message_id=message_id).encode(),
        sender=SENDER,
        recipients=[f"rcpt-{message_id[:12]}@example.com"],
        hostname="127.0.0.1",
        port=port,
        start_tls=False,
        use_tls=False,
        timeout=60,
    )
    return message_id, started


def times_by_id(sink: SmtpSink, run: str) -> dict[str, float]:
    found: dict[str, float] = {}
    for message in sink.messages():
        if message.header(RUN_HEADER) == run:
            found.setdefault(message.header(ID_HEADER) or "", message.received_at)
    return found


async def idle_latency(relay: PostfixRelay, sink: SmtpSink, body: str, samples: int) -> PeerRun:
    """One message at a time, each waited for at the sink: time to sink at idle."""
    run = uuid.uuid4().hex[:8]
    result = PeerRun(samples, started_at=time.time())
    for _ in range(samples):
        message_id, started = await submit_one(relay.layout.listen_port, body, run)
        while message_id not in (arrived := times_by_id(sink, run)):
            if time.time() - started > STALL_SECONDS:
                raise TimeoutError(f"postfix: message {message_id} never reached the sink")
            await asyncio.sleep(0.001)
        result.latencies.append(arrived[message_id] - started)
    result.delivered = len(result.latencies)
    result.last_arrival = time.time()
    return result


async def paced_latency(
    relay: PostfixRelay, sink: SmtpSink, body: str, messages: int, per_second: float, max_in_flight: int
) -> PeerRun:
    """Open-loop submissions at a fixed rate: time to sink per message under that load."""
    run = uuid.uuid4().hex[:8]
    result = PeerRun(messages, started_at=time.time())
    started: dict[str, float] = {}
    gate = asyncio.Semaphore(max_in_flight)

    async def one() -> None:
        async with gate:
            try:
                message_id, at = await submit_one(relay.layout.listen_port, body, run)
            except (aiosmtplib.SMTPException, OSError):
                result.errors += 1
                return
            started[message_id] = at

    await pace(one, messages, per_second)
    await await_run(sink, run, len(started))
    arrived = times_by_id(sink, run)
    result.latencies = [arrived[mid] - at for mid, at in started.items() if mid in arrived]
    result.delivered = len(result.latencies)
    result.last_arrival = max(arrived.values(), default=result.started_at)
    return result


async def pace(call: Callable[[], Coroutine[Any, Any, None]], count: int, per_second: float) -> None:
    """Start `call()` `count` times at `per_second`, open loop: a slow answer delays no later start."""
    tasks = []
    start = time.monotonic()
    for index in range(count):
        delay = start + index / per_second - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(call()))
    await asyncio.gather(*tasks)


def relay_root() -> Path:
    """A fresh directory of its own: the bench's data directory is private (0700), and Postfix's
    daemons, running as `postfix`, must be able to reach their queue."""
    return Path(tempfile.mkdtemp(prefix="postwire-bench-postfix-"))
