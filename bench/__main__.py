"""`python -m bench`: drive SendEmail through the edge and time each message until it reaches SMTP.

Starts its own SMTP sink and a whole Suite (embedded NATS + PostgreSQL unless POSTWIRE_NATS_URL /
POSTWIRE_DATABASE_URL point elsewhere), warms up, sends N messages with C calls in flight, waits
for every one at the sink, and prints a markdown report (also written to --out).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2
from postwire.v1 import admin_service_pb2, admin_service_pb2_grpc, mail_service_pb2, mail_service_pb2_grpc

from bench.compare import percentile
from libs.capture import SmtpSink
from libs.embedded.ports import free_port
from libs.embedded.suite import SERVICES, Suite, SuitePorts
from libs.readiness import READINESS

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = Path("bench/results/latest.md")
WARMUP_MESSAGES = 50
MESSAGE_ID_HEADER = "X-Postwire-Message-Id"
CALL_TIMEOUT_SECONDS = 60.0
# Fresh for each run: the bench makes its tenant through AdminService, and the services need
# their shared internal token.
ADMIN_TOKEN = "pwadmin_bench_" + uuid.uuid4().hex
INTERNAL_TOKEN = "pwinternal_bench_" + uuid.uuid4().hex
SERVICE_READY_TIMEOUT_SECONDS = 60.0
# Delivery gives up when nothing new has arrived for this long, or at the overall cap below,
# whichever comes first: a stuck pipeline fails in a minute, a slow one still gets to finish.
DELIVERY_STALL_SECONDS = 60.0
DELIVERY_CAP_BASE_SECONDS = 300.0
DELIVERY_CAP_PER_MESSAGE_SECONDS = 0.5
POLL_SECONDS = 0.1
ERROR_SAMPLES = 3
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

_FILLER = "The quick brown fox jumps over the lazy dog while the postman waits outside."  # 76 chars


# -- data ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sent:
    """One accepted SendEmail call."""

    message_id: str
    started_at: float  # time.time(), comparable with the sink's received_at
    accepted_at: float  # time.time() when the answer arrived
    accept_seconds: float  # perf_counter interval: immune to wall-clock steps


@dataclass
class SendPhase:
    """What one batch of SendEmail calls produced."""

    sent: list[Sent] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    error_samples: list[str] = field(default_factory=list)
    started_at: float = 0.0  # time.time() when the first call was issued
    wall_seconds: float = 0.0

    def record_error(self, exc: BaseException) -> None:
        kind = exc.code().name if isinstance(exc, grpc.aio.AioRpcError) else type(exc).__name__
        self.errors[kind] += 1
        if len(self.error_samples) < ERROR_SAMPLES:
            detail = exc.details() if isinstance(exc, grpc.aio.AioRpcError) else str(exc)
            self.error_samples.append(f"{kind}: {detail}")


@dataclass
class Deliveries:
    """What the sink saw for a set of accepted message ids."""

    received_at: dict[str, float] = field(default_factory=dict)  # first arrival per message id
    duplicates: int = 0
    strays: int = 0  # messages at the sink that no accepted call of this phase produced
    timed_out: bool = False


@dataclass(frozen=True, slots=True)
class ServiceUsage:
    cpu_seconds: float
    rss_mb: float | None


@dataclass
class Report:
    messages: int
    concurrency: int
    phase: SendPhase
    deliveries: Deliveries
    usage: dict[str, ServiceUsage]
    client_cpu_seconds: float
    machine: MachineCpu  # whole machine, all cores, over the measured run


# -- process accounting --------------------------------------------------------------------------


def cpu_seconds(pid: int | str) -> float:
    """utime + stime of one process, from /proc/<pid>/stat."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may contain spaces and parentheses; fields resume after the last ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / CLOCK_TICKS


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024  # reported in kB
    except OSError:
        pass  # the process died; the report shows n/a rather than failing the run
    return None


@dataclass(frozen=True, slots=True)
class MachineCpu:
    """Aggregate jiffies from the first line of /proc/stat."""

    busy: int
    iowait: int
    total: int

    @classmethod
    def read(cls) -> MachineCpu:
        # user nice system idle iowait irq softirq steal; guest time is already inside user.
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        idle, iowait, total = values[3], values[4], sum(values)
        return cls(total - idle - iowait, iowait, total)

    def since(self, before: MachineCpu) -> MachineCpu:
        return MachineCpu(self.busy - before.busy, self.iowait - before.iowait, self.total - before.total)


def cpu_snapshot(suite: Suite) -> dict[str, float]:
    return {name: cpu_seconds(proc.pid) for name, proc in suite.processes.items()}


def total_cpu(report: Report) -> float:
    # A service that died mid-run has NaN CPU; leave it out of the sums rather than blank them.
    return sum(u.cpu_seconds for u in report.usage.values() if not math.isnan(u.cpu_seconds))


def service_usage(suite: Suite, before: dict[str, float]) -> dict[str, ServiceUsage]:
    usage = {}
    for name, proc in suite.processes.items():
        try:
            spent = cpu_seconds(proc.pid) - before[name]
        except OSError:
            spent = math.nan
        usage[name] = ServiceUsage(spent, rss_mb(proc.pid))
    return usage


# -- suite lifecycle -----------------------------------------------------------------------------


def make_suite(data_dir: Path, sink: SmtpSink, extra_env: Mapping[str, str] | None = None) -> Suite:
    """A Suite on free ports delivering to the sink; nothing is started yet. `extra_env` adds or
    overrides settings for one benchmark."""
    return Suite(
        data_dir=data_dir,
        ports=SuitePorts.free(),
        smarthost=f"127.0.0.1:{sink.port}",
        # The capture sink offers no STARTTLS.
        smarthost_tls="none",
        nats_url=os.environ.get("POSTWIRE_NATS_URL"),
        database_url=os.environ.get("POSTWIRE_DATABASE_URL"),
        # INFO logs a line per message per service; that would be a large part of what we measure.
        extra_env={
            "POSTWIRE_LOG_LEVEL": "WARNING",
            "POSTWIRE_ENV": "dev",
            "POSTWIRE_DEV_FROM_DOMAINS": "example.com",
            "POSTWIRE_ADMIN_TOKEN": ADMIN_TOKEN,
            "POSTWIRE_INTERNAL_TOKEN": INTERNAL_TOKEN,
            **(extra_env or {}),
        },
    )


def spawn_services(suite: Suite) -> None:
    # Suite.start_services waits for the "serving on" log line, which is INFO and so never
    # appears at WARNING; spawn without waiting and ask each server's readiness instead.
    for name in SERVICES:
        suite.start_service(name, wait=False)


async def wait_ready(suite: Suite) -> None:
    await asyncio.gather(*(wait_serving(suite, name) for name in SERVICES))


async def wait_serving(suite: Suite, name: str) -> None:
    proc = suite.processes[name]
    deadline = time.monotonic() + SERVICE_READY_TIMEOUT_SECONDS
    async with grpc.aio.insecure_channel(suite.ports.addr(name)) as channel:
        # grpc_health's stubs declare HealthStub without its methods; the call, typed by hand.
        check = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        while True:
            if not proc.running():
                raise RuntimeError(f"{name} exited during start-up:\n{proc.output()[-3000:]}")
            try:
                # Readiness, not liveness (the empty name): SERVING only once the schema is
                # migrated and PostgreSQL and NATS answer, so no measured call meets a cold dependency.
                answer = await check(health_pb2.HealthCheckRequest(service=READINESS), timeout=1)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass  # not listening yet
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} not ready after {SERVICE_READY_TIMEOUT_SECONDS}s")
            await asyncio.sleep(0.2)


async def create_api_key(suite: Suite, limits: Sequence[admin_service_pb2.StreamLimits] = ()) -> str:
    auth = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
    async with grpc.aio.insecure_channel(suite.ports.addr("edge")) as channel:
        stub = admin_service_pb2_grpc.AdminServiceStub(channel)
        made = await stub.CreateTenant(
            admin_service_pb2.CreateTenantRequest(
                tenant=admin_service_pb2.Tenant(name=f"bench-{uuid.uuid4().hex[:8]}", limits=list(limits))
            ),
            metadata=auth,
            timeout=10,
        )
        created = await stub.CreateApiKey(
            admin_service_pb2.CreateApiKeyRequest(tenant_id=made.tenant.id, scopes=["send"]),
            metadata=auth,
            timeout=10,
        )
    return created.secret


# -- sending -------------------------------------------------------------------------------------


def text_body(index: int) -> str:
    """About 2 KB of plain text in short lines, so no line needs folding or re-encoding."""
    return f"Hello recipient {index},\n\n" + "\n".join([_FILLER] * 26) + "\n"


def build_request(
    run: str, index: int, from_address: str = "bench@example.com"
) -> mail_service_pb2.SendEmailRequest:
    # `from` is a Python keyword, so the fields go in as a mapping.
    fields: dict[str, Any] = {
        "from": {"address": from_address, "name": "Postwire Bench"},
        "to": [{"address": f"bench+{run}-{index:07d}@example.com"}],
        "subject": f"Bench message {index}",
        "text_body": text_body(index),
    }
    return mail_service_pb2.SendEmailRequest(**fields)


async def send_one(
    stub: mail_service_pb2_grpc.MailServiceAsyncStub,
    request: mail_service_pb2.SendEmailRequest,
    metadata: tuple[tuple[str, str], ...],
    phase: SendPhase,
) -> None:
    started_at, start = time.time(), time.perf_counter()
    try:
        answer = await stub.SendEmail(request, metadata=metadata, timeout=CALL_TIMEOUT_SECONDS)
    except grpc.aio.AioRpcError as exc:  # deadlines arrive as DEADLINE_EXCEEDED, too
        phase.record_error(exc)
        return
    elapsed = time.perf_counter() - start
    phase.sent.append(Sent(answer.message_id, started_at, time.time(), elapsed))


async def send_many(
    stub: mail_service_pb2_grpc.MailServiceAsyncStub,
    api_key: str,
    count: int,
    concurrency: int,
    from_address: str = "bench@example.com",
) -> SendPhase:
    """`count` SendEmail calls from `concurrency` workers, so exactly that many are in flight."""
    run = uuid.uuid4().hex[:8]  # unique recipients across phases and across runs on a shared DB
    metadata = (("authorization", f"Bearer {api_key}"),)
    # Built up front so request construction is not inside the timed section.
    requests = [build_request(run, i, from_address) for i in range(count)]
    queue: Iterator[mail_service_pb2.SendEmailRequest] = iter(requests)
    phase = SendPhase()

    async def worker() -> None:
        # A shared iterator needs no lock: next() never awaits, so workers cannot interleave in it.
        for request in queue:
            await send_one(stub, request, metadata, phase)

    phase.started_at, start = time.time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, count)))))
    phase.wall_seconds = time.perf_counter() - start
    return phase


# -- delivery ------------------------------------------------------------------------------------


async def await_deliveries(sink: SmtpSink, expected: set[str], *, cap_seconds: float) -> Deliveries:
    """Poll the sink until every expected id has arrived, nothing new came for a minute, or the cap.

    Polls rather than sink.wait_for: wait_for re-runs its predicate over every message on each
    arrival while holding the sink's lock, which is quadratic and would slow the sink itself.
    Arrival times come from the sink, so the poll interval does not affect any figure.
    """
    found = Deliveries()
    seen = 0
    deadline = time.monotonic() + cap_seconds
    last_progress = time.monotonic()
    while len(found.received_at) < len(expected):
        messages = sink.messages()
        for message in messages[seen:]:
            classify(message.header(MESSAGE_ID_HEADER), message.received_at, expected, found)
        if len(messages) > seen:
            last_progress = time.monotonic()
        seen = len(messages)
        now = time.monotonic()
        if now > deadline or now - last_progress > DELIVERY_STALL_SECONDS:
            found.timed_out = len(found.received_at) < len(expected)
            break
        await asyncio.sleep(POLL_SECONDS)
    return found


def classify(message_id: str | None, received_at: float, expected: set[str], found: Deliveries) -> None:
    if message_id not in expected:
        found.strays += 1
    elif message_id in found.received_at:
        found.duplicates += 1
    else:
        found.received_at[message_id] = received_at


def delivery_cap(count: int) -> float:
    return DELIVERY_CAP_BASE_SECONDS + DELIVERY_CAP_PER_MESSAGE_SECONDS * count


async def warm_up(
    stub: mail_service_pb2_grpc.MailServiceAsyncStub, api_key: str, sink: SmtpSink, concurrency: int
) -> None:
    """Open connections, fill pools and caches, and prime JetStream consumers before measuring."""
    phase = await send_many(stub, api_key, WARMUP_MESSAGES, concurrency)
    if not phase.sent:
        raise RuntimeError(f"every warm-up call failed: {phase.error_samples}")
    if phase.errors:
        log(f"warm-up: {sum(phase.errors.values())} call(s) failed: {phase.error_samples}")
    expected = {s.message_id for s in phase.sent}
    found = await await_deliveries(sink, expected, cap_seconds=delivery_cap(WARMUP_MESSAGES))
    if found.timed_out:
        raise RuntimeError(f"warm-up: only {len(found.received_at)}/{len(phase.sent)} delivered")
    sink.clear()


# -- the run -------------------------------------------------------------------------------------


async def measure(suite: Suite, sink: SmtpSink, messages: int, concurrency: int) -> Report:
    await wait_ready(suite)
    api_key = await create_api_key(suite)
    async with grpc.aio.insecure_channel(suite.ports.addr("edge")) as channel:
        # One channel for warm-up and run, so the measured calls reuse a connected HTTP/2 session.
        stub = mail_service_pb2_grpc.MailServiceStub(channel)
        log(f"warming up with {WARMUP_MESSAGES} messages…")
        await warm_up(stub, api_key, sink, concurrency)
        before, client_before, machine_before = cpu_snapshot(suite), cpu_seconds("self"), MachineCpu.read()
        log(f"sending {messages} messages, {concurrency} in flight…")
        phase = await send_many(stub, api_key, messages, concurrency)
        log(f"accepted {len(phase.sent)} in {phase.wall_seconds:.1f}s; waiting for delivery…")
        deliveries = await await_deliveries(
            sink, {s.message_id for s in phase.sent}, cap_seconds=delivery_cap(messages)
        )
        usage = service_usage(suite, before)
        client_cpu = cpu_seconds("self") - client_before
        machine = MachineCpu.read().since(machine_before)
    return Report(messages, concurrency, phase, deliveries, usage, client_cpu, machine)


def run(messages: int, concurrency: int) -> Report:
    data_dir = Path(tempfile.mkdtemp(prefix="postwire-bench-"))
    sink = SmtpSink("127.0.0.1", 0, scripted=False)
    suite: Suite | None = None
    keep_logs = False
    try:
        sink.start()
        suite = make_suite(data_dir, sink)
        # /metrics of every service during the run, to watch the documented series move.
        suite.metrics_ports = {name: free_port() for name in SERVICES}
        log(
            "metrics: "
            + " ".join(f"{n}=http://127.0.0.1:{p}/metrics" for n, p in suite.metrics_ports.items())
        )
        log("starting NATS, PostgreSQL and the services…")
        suite.start_infrastructure()
        spawn_services(suite)
        return asyncio.run(measure(suite, sink, messages, concurrency))
    except Exception:
        keep_logs = True  # a failure is worth its service logs; an interrupt (Ctrl-C, SIGTERM) is not
        raise
    finally:
        if suite is not None:
            suite.stop()
        sink.stop()
        if keep_logs:
            log(f"run failed; service logs kept in {data_dir / 'logs'}")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)


# -- report --------------------------------------------------------------------------------------


def ms(seconds: float | None) -> str:
    return "n/a" if seconds is None or math.isnan(seconds) else f"{seconds * 1000:.1f}"


def secs(seconds: float) -> str:
    return "n/a" if math.isnan(seconds) else f"{seconds:.2f}"


def rate(count: int, seconds: float) -> str:
    return f"{count / seconds:.1f}" if seconds > 0 and count else "n/a"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    # First column is a label (left-aligned); the rest are figures (right-aligned).
    align = [":---", *("---:" for _ in header[1:])]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def results_table(report: Report, extra: Sequence[tuple[str, str]] = ()) -> list[str]:
    """The run's figures; `extra` (header, value) columns go to the right of the classic ones."""
    phase, found = report.phase, report.deliveries
    by_id = {s.message_id: s for s in phase.sent}
    accept = [s.accept_seconds for s in phase.sent]
    e2e = [at - by_id[mid].started_at for mid, at in found.received_at.items()]
    after_accept = [at - by_id[mid].accepted_at for mid, at in found.received_at.items()]
    end = max(found.received_at.values(), default=phase.started_at)
    header = [
        "messages",
        "concurrency",
        "send errors",
        "not delivered",
        "SendEmail accepted/s",
        "delivered/s e2e",
        "accept p50 ms",
        "accept p99 ms",
        "send→delivered p50 ms",
        "send→delivered p99 ms",
        "accepted→delivered p50 ms",
        "accepted→delivered p99 ms",
    ]
    row = [
        str(report.messages),
        str(report.concurrency),
        str(sum(phase.errors.values())),
        str(len(phase.sent) - len(found.received_at)),
        rate(len(phase.sent), phase.wall_seconds),
        rate(len(found.received_at), end - phase.started_at),
        ms(percentile(accept, 50)),
        ms(percentile(accept, 99)),
        ms(percentile(e2e, 50)),
        ms(percentile(e2e, 99)),
        ms(percentile(after_accept, 50)),
        ms(percentile(after_accept, 99)),
    ]
    return table([*header, *(h for h, _ in extra)], [[*row, *(v for _, v in extra)]])


def usage_table(report: Report, infra: Mapping[str, ServiceUsage] | None = None) -> list[str]:
    per = max(1, len(report.phase.sent))  # CPU per accepted message: failed calls do little work
    rows = [
        [
            name,
            ms(use.cpu_seconds / per),
            secs(use.cpu_seconds),
            "n/a" if use.rss_mb is None else f"{use.rss_mb:.0f}",
        ]
        for name, use in report.usage.items()
    ]
    cpu = total_cpu(report)
    rss = sum(u.rss_mb or 0.0 for u in report.usage.values())
    rows.append(["**all services**", ms(cpu / per), secs(cpu), f"{rss:.0f}"])
    if infra:
        # PostgreSQL and NATS as whole process trees (PostgreSQL's backends come and go).
        for name, use in infra.items():
            rows.append(
                [
                    name,
                    ms(use.cpu_seconds / per),
                    secs(use.cpu_seconds),
                    "n/a" if use.rss_mb is None else f"{use.rss_mb:.0f}",
                ]
            )
        both = cpu + sum(u.cpu_seconds for u in infra.values())
        rows.append(["**services + " + " + ".join(infra) + "**", ms(both / per), secs(both), ""])
    rows.append(
        ["(bench client + sink)", ms(report.client_cpu_seconds / per), secs(report.client_cpu_seconds), "n/a"]
    )
    return table(["service", "CPU ms/msg", "CPU s", "RSS MB"], rows)


def machine_line(report: Report) -> str:
    """Whether the machine was the limit, and how much of it went to things the table leaves out.

    The remainder is NATS and PostgreSQL, plus any other load on the box (say, someone's tests),
    which would skew the figures; /proc/stat cannot tell those apart.
    """
    machine = report.machine
    capacity = max(1, machine.total) / CLOCK_TICKS  # core-seconds available in the window
    services = total_cpu(report) / capacity
    client = report.client_cpu_seconds / capacity
    busy = machine.busy / CLOCK_TICKS / capacity
    return (
        f"Whole machine over the measured run (share of all cores): CPU busy {busy:.0%} = services "
        f"{services:.0%} + bench client {client:.0%} + rest {max(0.0, busy - services - client):.0%} "
        f"(NATS, PostgreSQL and anything else running); iowait {machine.iowait / CLOCK_TICKS / capacity:.0%}."
    )


def problems(report: Report) -> list[str]:
    """Everything that went wrong, spelled out, so a fast-looking run cannot hide failures."""
    phase, found = report.phase, report.deliveries
    lines = []
    if phase.errors:
        counts = ", ".join(f"{kind}: {n}" for kind, n in phase.errors.most_common())
        lines.append(f"- **SendEmail errors**: {counts}")
        lines += [f"  - e.g. `{sample}`" for sample in phase.error_samples]
    if found.timed_out:
        lines.append(
            f"- **Delivery timed out**: {len(phase.sent) - len(found.received_at)} accepted "
            "message(s) never reached the sink"
        )
    if found.duplicates:
        lines.append(f"- **Duplicate deliveries**: {found.duplicates}")
    if found.strays:
        lines.append(f"- **Unexpected messages at the sink**: {found.strays}")
    return lines


def environment() -> list[str]:
    return [
        f"- date: {datetime.now(UTC).isoformat(timespec='seconds')}",
        f"- machine: nproc {len(os.sched_getaffinity(0))}, {cpu_model()}, "
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}",
        f"- commit: {git_commit()}",
        f"- NATS: {'external' if os.environ.get('POSTWIRE_NATS_URL') else 'embedded'}, "
        f"PostgreSQL: {'external' if os.environ.get('POSTWIRE_DATABASE_URL') else 'embedded'}",
    ]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine() or "unknown CPU"


def git_commit() -> str:
    try:
        head = git("rev-parse", "--short", "HEAD")
        # Other work is often uncommitted; say so, since the figures then are not HEAD's alone.
        return head + (" (with uncommitted changes)" if git("status", "--porcelain") else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10, check=True)
    return done.stdout.strip()


def render(report: Report) -> str:
    lines = ["# Postwire send-path benchmark", "", *environment(), "", *results_table(report), ""]
    lines += ["Per service, over the measured run (warm-up excluded); RSS at the end:", ""]
    lines += [*usage_table(report), ""]
    lines += [machine_line(report), ""]
    issues = problems(report)
    clean = "No send errors; every accepted message was delivered exactly once."
    lines += ["Problems:", "", *issues] if issues else [clean]
    return "\n".join(lines) + "\n"


# -- entry point ---------------------------------------------------------------------------------


def log(text: str) -> None:
    print(f"[bench] {text}", file=sys.stderr, flush=True)


def positive(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=positive, default=2000, help="messages to send (default 2000)")
    parser.add_argument("--concurrency", type=positive, default=64, help="calls in flight (default 64)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"report file (default {DEFAULT_OUT})")
    parser.add_argument(
        "--classic",
        action="store_true",
        help="the pre-issue-14 shape only: dev From domain, no DKIM, no webhook, WARNING logs, no Postfix",
    )
    return parser.parse_args(argv)


def exit_on_sigterm(signum: int, frame: object) -> None:
    # Python's default for SIGTERM is to die on the spot, skipping `finally`; the services run in
    # their own sessions, so they, NATS and PostgreSQL would outlive us. Exit through cleanup instead.
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    # The production-shaped run beside Postfix lives in its own module; it reuses this one's parts.
    from bench.side_by_side import render_side_by_side, side_by_side_problems
    from bench.side_by_side import run as run_side_by_side

    args = parse_args(argv)
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    if args.classic:
        # Kept for A/B runs against figures recorded before the production shape.
        report = run(args.messages, args.concurrency)
        return finish(render(report), args.out, failed=bool(problems(report)))
    result = run_side_by_side(args.messages, args.concurrency)
    return finish(render_side_by_side(result), args.out, failed=bool(side_by_side_problems(result)))


def finish(text: str, out: Path, *, failed: bool) -> int:
    print(text)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    log(f"written to {out}")
    # Non-zero when anything went wrong, so a scripted run cannot mistake a broken one for a result.
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
