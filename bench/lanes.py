"""Other mail beside a bad destination: `python -m bench.lanes` (issue 9 item 6).

Starts its own scripted SMTP sink and the whole Suite, then measures "other mail" (a steady
trickle to a healthy domain) from SendEmail's answer to the sink's 250, in three scenarios: alone
(the baseline), beside a flood of messages to a domain that answers 451 to every RCPT forever
(their retries keep coming), and beside a tarpit (a domain that sits on every reply to "." for
several seconds). Prints a markdown table and writes it to --out. Compare within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
from postwire.v1 import mail_service_pb2, mail_service_pb2_grpc

from bench.__main__ import create_api_key, make_suite, spawn_services, wait_ready
from libs.capture import SmtpSink
from libs.embedded.suite import Suite

DEFAULT_OUT = Path("bench/results/lanes.md")
HEADER = "X-Postwire-Message-Id"


def _request(to: str, index: int) -> mail_service_pb2.SendEmailRequest:
    # `from` is a Python keyword, so the fields go in as a mapping.
    fields: dict[str, Any] = {
        "from": {"address": "bench@example.com"},
        "to": [{"address": to}],
        "subject": f"lanes {index}",
        "text_body": "Hello.\n",
    }
    return mail_service_pb2.SendEmailRequest(**fields)


async def _flood(
    stub: mail_service_pb2_grpc.MailServiceAsyncStub,
    auth: tuple[tuple[str, str], ...],
    local: str,
    domain: str,
    n: int,
) -> None:
    sem = asyncio.Semaphore(32)

    async def one(i: int) -> None:
        async with sem:
            await stub.SendEmail(
                _request(f"{local}+{uuid.uuid4().hex[:10]}@{domain}", i), metadata=auth, timeout=60
            )

    await asyncio.gather(*(one(i) for i in range(n)))


async def _other_mail(
    stub: mail_service_pb2_grpc.MailServiceAsyncStub,
    auth: tuple[tuple[str, str], ...],
    sink: SmtpSink,
    count: int,
    rate: float,
) -> list[float]:
    """Send `count` messages at `rate`/s to a healthy domain; each one's accepted→delivered seconds."""
    accepted: dict[str, float] = {}

    async def one(i: int) -> None:
        answer = await stub.SendEmail(
            _request(f"other+{uuid.uuid4().hex[:10]}@example.com", i), metadata=auth, timeout=60
        )
        accepted[answer.message_id] = time.time()

    tasks = []
    for i in range(count):
        tasks.append(asyncio.create_task(one(i)))
        await asyncio.sleep(1 / rate)
    await asyncio.gather(*tasks)
    deadline = time.monotonic() + 120
    while True:
        delivered = {m.header(HEADER): m.received_at for m in sink.messages()}
        if all(mid in delivered for mid in accepted) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    return [max(0.0, delivered[mid] - at) for mid, at in accepted.items() if mid in delivered]


def _attempts(sink: SmtpSink, domain: str, phase: str) -> int:
    return sum(1 for address, p, _ in sink.attempts() if p == phase and address.endswith("@" + domain))


async def _until(done: Callable[[], bool], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError("the bad destination never got busy")
        await asyncio.sleep(0.2)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def _measure(
    suite: Suite, sink: SmtpSink, args: argparse.Namespace, scenario: str
) -> list[tuple[str, list[float], int]]:
    """In one fresh suite: other mail alone, then beside the scenario's bad destination."""
    await wait_ready(suite)
    key = await create_api_key(suite)
    auth = (("authorization", f"Bearer {key}"),)
    async with grpc.aio.insecure_channel(suite.ports.addr("edge")) as channel:
        stub = mail_service_pb2_grpc.MailServiceStub(channel)
        await _other_mail(stub, auth, sink, 20, args.rate)  # warm-up
        baseline = await _other_mail(stub, auth, sink, args.other, args.rate)
        if scenario == "flood":
            name = f"beside {args.flood} to a 451-forever domain"
            await _flood(stub, auth, "tempfail", "deferring.example", args.flood)
            # Measure once every flood message has had its first attempt: what is left is retries.
            await _until(lambda: _attempts(sink, "deferring.example", "RCPT") >= args.flood)
        else:
            name = f"beside {args.tarpit} to a tarpit ({args.tarpit_seconds} s per '.')"
            await _flood(stub, auth, f"holddot{args.tarpit_seconds}", "tarpit.example", args.tarpit)
            await _until(lambda: _attempts(sink, "tarpit.example", "HOLD") >= min(16, args.tarpit))
        beside = await _other_mail(stub, auth, sink, args.other, args.rate)
    return [(f"{scenario}: baseline", baseline, args.other), (name, beside, args.other)]


def _run_scenario(args: argparse.Namespace, scenario: str) -> list[tuple[str, list[float], int]]:
    data_dir = Path(tempfile.mkdtemp(prefix="postwire-bench-lanes-"))
    sink = SmtpSink("127.0.0.1", 0, scripted=True)
    suite: Suite | None = None
    try:
        sink.start()
        suite = make_suite(
            data_dir,
            sink,
            {
                # Retries come back within seconds, so the flood's retries overlap the measurement
                # (5 s doubling: 500 deferrals cost ~100 attempts/s at first, on a 2-core box).
                "POSTWIRE_RETRY_BASE_SECONDS": "5",
                "POSTWIRE_RETRY_MAX_SECONDS": "20",
                "POSTWIRE_SWEEP_INTERVAL_SECONDS": "0.3",
                "POSTWIRE_STALL_SECONDS": "3",
            },
        )
        suite.start_infrastructure()
        spawn_services(suite)
        return asyncio.run(_measure(suite, sink, args, scenario))
    finally:
        if suite is not None:
            suite.stop()
        sink.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--other", type=int, default=200, help="other-mail messages per scenario")
    parser.add_argument("--rate", type=float, default=20.0, help="other-mail sends per second")
    parser.add_argument("--flood", type=int, default=500, help="messages to the 451-forever domain")
    parser.add_argument("--tarpit", type=int, default=100, help="messages to the tarpit domain")
    parser.add_argument("--tarpit-seconds", type=int, default=10)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    rows = [row for scenario in ("flood", "tarpit") for row in _run_scenario(args, scenario)]
    lines = [
        f"# Other mail beside a bad destination ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        f"{args.other} other messages per measurement at {args.rate:g}/s; accepted → delivered at the sink.",
        "Each scenario runs in a fresh suite, measured alone first (its baseline) and then beside the",
        "bad destination.",
        "",
        "| Measurement | delivered | p50 ms | p95 ms | p99 ms | p99 / baseline |",
        "|---|---|---|---|---|---|",
    ]
    base = 1.0
    for name, values, sent in rows:
        p50, p95, p99 = (_pct(values, q) if values else float("nan") for q in (0.5, 0.95, 0.99))
        if name.endswith("baseline"):
            base = p99
        lines.append(
            f"| {name} | {len(values)}/{sent} | {p50:.0f} | {p95:.0f} | {p99:.0f} | {p99 / base:.2f}x |"
        )
    report = "\n".join(lines) + "\n"
    print(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)


if __name__ == "__main__":
    main()
