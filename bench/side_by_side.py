"""`python -m bench`'s run: Postwire in its production shape beside a private Postfix relay, both
into the same SMTP sink with the same ~2 KB message, the cases interleaved:

Postfix single sends → Postwire single sends → Postwire SendBatch → Postfix idle → Postwire idle
→ Postwire at half its maximum → Postfix at half its maximum → Postwire overloaded (bench.overload).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import grpc
from postwire.v1 import mail_service_pb2, mail_service_pb2_grpc

from bench import peer, postfix
from bench.__main__ import (
    ADMIN_TOKEN,
    CLOCK_TICKS,
    INTERNAL_TOKEN,
    WARMUP_MESSAGES,
    Deliveries,
    MachineCpu,
    Report,
    SendPhase,
    Sent,
    ServiceUsage,
    await_deliveries,
    build_request,
    cpu_seconds,
    cpu_snapshot,
    delivery_cap,
    environment,
    log,
    machine_line,
    problems,
    results_table,
    rss_mb,
    send_many,
    send_one,
    service_usage,
    spawn_services,
    text_body,
    usage_table,
    wait_ready,
)
from bench.compare import (
    CaseRow,
    Latencies,
    ProcStat,
    Rates,
    case_rows,
    cases_table,
    figure,
    parse_stat,
    per_message_ms,
    percentile,
    ratio,
    ratio_text,
    tree_cpu,
)
from bench.overload import Overload, overload_problems, overload_table, run_overload
from bench.production import (
    WEBHOOK_PATH,
    Sender,
    front_door_overrides,
    make_sender,
    priorities_text,
    production_env,
    production_suite,
)
from libs.capture import SmtpSink
from libs.embedded.ports import free_port
from libs.embedded.suite import Suite
from libs.testing.dns_server import LoopbackDns
from libs.testing.webhook_receiver import WebhookReceiver

BATCH_SIZE = 1000
IDLE_SAMPLES = 50
# PostgreSQL (15+) flushes a backend's statistics at most once a second and, for an idle backend,
# within 10 s; waiting that long before reading pg_stat_database makes the commit delta complete.
PG_STATS_SETTLE_SECONDS = 11.0


@dataclass
class Infra:
    """CPU of the embedded PostgreSQL and NATS process trees; empty when they are external."""

    pids: dict[str, int]

    def snapshot(self) -> dict[str, float]:
        stats = proc_stats()
        return {name: tree_cpu(stats, pid) for name, pid in self.pids.items()}


def proc_stats() -> dict[int, ProcStat]:
    stats = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stats[int(entry.name)] = parse_stat((entry / "stat").read_text(), CLOCK_TICKS)
            except (OSError, ValueError, IndexError):
                continue  # exited while we looked
    return stats


@dataclass
class SideBySide:
    """Everything the run measured; `single` is the classic report (its table keeps its columns)."""

    single: Report
    infra_usage: dict[str, ServiceUsage]
    commits: int | None
    single_machine_ms: float | None
    postfix_note: str
    rows: list[CaseRow] = field(default_factory=list)
    postfix_machine_ms: float | None = None
    postfix_rate: float | None = None
    batch_problems: list[str] = field(default_factory=list)
    # 6. Open loop at 3x the single-send rate; None when that rate was not measured.
    overload: Overload | None = None
    priorities: str = ""


async def xact_commits(database_url: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        value = await conn.fetchval(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        )
    finally:
        await conn.close()
    return int(value)


def delivered_rate(phase: SendPhase, found: Deliveries) -> float | None:
    if not found.received_at:
        return None
    seconds = max(found.received_at.values()) - phase.started_at
    return len(found.received_at) / seconds if seconds > 0 else None


def e2e_latencies(phase: SendPhase, found: Deliveries) -> list[float]:
    by_id = {s.message_id: s for s in phase.sent}
    return [at - by_id[mid].started_at for mid, at in found.received_at.items()]


async def send_batches(
    stub: mail_service_pb2_grpc.MailServiceAsyncStub, sender: Sender, count: int
) -> tuple[SendPhase, str]:
    """`count` messages as SendBatch calls of BATCH_SIZE, all in flight at once; the note says why
    nothing was sent when the server refuses the method."""
    run = uuid.uuid4().hex[:8]
    batches = [
        mail_service_pb2.SendBatchRequest(
            messages=[
                build_request(run, i, sender.from_address)
                for i in range(start, min(start + BATCH_SIZE, count))
            ]
        )
        for start in range(0, count, BATCH_SIZE)
    ]
    phase, note = SendPhase(), ""

    async def one(request: mail_service_pb2.SendBatchRequest) -> None:
        nonlocal note
        started_at, start = time.time(), time.perf_counter()
        try:
            answer = await stub.SendBatch(request, metadata=sender.metadata, timeout=300)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                note = "SendBatch answered UNIMPLEMENTED"
            phase.record_error(exc)
            return
        elapsed = time.perf_counter() - start
        phase.sent += [Sent(r.message_id, started_at, time.time(), elapsed) for r in answer.results]

    phase.started_at, start = time.time(), time.perf_counter()
    await asyncio.gather(*(one(b) for b in batches))
    phase.wall_seconds = time.perf_counter() - start
    return phase, note


async def paced_sends(
    stub: mail_service_pb2_grpc.MailServiceAsyncStub, sender: Sender, count: int, per_second: float
) -> SendPhase:
    run = uuid.uuid4().hex[:8]
    requests = iter([build_request(run, i, sender.from_address) for i in range(count)])
    phase = SendPhase()

    async def one() -> None:
        await send_one(stub, next(requests), sender.metadata, phase)

    phase.started_at, start = time.time(), time.perf_counter()
    await peer.pace(one, count, per_second)
    phase.wall_seconds = time.perf_counter() - start
    return phase


async def idle_sends(
    stub: mail_service_pb2_grpc.MailServiceAsyncStub, sender: Sender, sink: SmtpSink, samples: int
) -> list[float]:
    """One SendEmail at a time, each waited for at the sink: send→delivered at idle."""
    latencies = []
    for _ in range(samples):
        phase = await send_many(stub, sender.api_key, 1, 1, sender.from_address)
        if not phase.sent:
            raise RuntimeError(f"idle send failed: {phase.error_samples}")
        found = await await_deliveries(sink, {phase.sent[0].message_id}, cap_seconds=60)
        latencies += e2e_latencies(phase, found)
    return latencies


async def postwire_single(
    suite: Suite,
    sink: SmtpSink,
    stub: mail_service_pb2_grpc.MailServiceAsyncStub,
    sender: Sender,
    infra: Infra,
    messages: int,
    concurrency: int,
) -> tuple[Report, dict[str, ServiceUsage], int]:
    """The classic single-send case, plus PostgreSQL and NATS CPU and the commits it caused."""
    assert suite.database_url
    sink.clear()
    await asyncio.sleep(PG_STATS_SETTLE_SECONDS)
    commits_before = await xact_commits(suite.database_url)
    before, infra_before = cpu_snapshot(suite), infra.snapshot()
    client_before, machine_before = cpu_seconds("self"), MachineCpu.read()
    log(f"postwire: {messages} SendEmail calls, {concurrency} in flight…")
    phase = await send_many(stub, sender.api_key, messages, concurrency, sender.from_address)
    found = await await_deliveries(
        sink, {s.message_id for s in phase.sent}, cap_seconds=delivery_cap(messages)
    )
    usage = service_usage(suite, before)
    infra_after = infra.snapshot()
    client_cpu = cpu_seconds("self") - client_before
    machine = MachineCpu.read().since(machine_before)
    await asyncio.sleep(PG_STATS_SETTLE_SECONDS)
    commits = await xact_commits(suite.database_url) - commits_before - 1  # our own SELECT
    infra_usage = {
        name: ServiceUsage(infra_after[name] - infra_before[name], rss_tree_mb(pid))
        for name, pid in infra.pids.items()
    }
    return Report(messages, concurrency, phase, found, usage, client_cpu, machine), infra_usage, commits


async def measure(
    suite: Suite,
    sink: SmtpSink,
    dns: LoopbackDns,
    receiver: WebhookReceiver,
    relay: postfix.PostfixRelay | None,
    messages: int,
    concurrency: int,
    postfix_note: str,
) -> SideBySide:
    await wait_ready(suite)
    assert suite.database_url
    infra = Infra(dict(suite.infra_pids))
    body = text_body(0)
    async with grpc.aio.insecure_channel(suite.ports.addr("edge")) as channel:
        stub = mail_service_pb2_grpc.MailServiceStub(channel)
        sender = await make_sender(channel, ADMIN_TOKEN, dns, receiver.url(WEBHOOK_PATH))
        log(f"sending as {sender.from_address} (verified through the loopback DNS)")
        log(f"warming up with {WARMUP_MESSAGES} messages…")
        warm = await send_many(stub, sender.api_key, WARMUP_MESSAGES, concurrency, sender.from_address)
        if not warm.sent:
            raise RuntimeError(f"every warm-up call failed: {warm.error_samples}")
        await await_deliveries(
            sink, {s.message_id for s in warm.sent}, cap_seconds=delivery_cap(WARMUP_MESSAGES)
        )

        # 1. Postfix, single sends at the same concurrency.
        pf_single: peer.PeerRun | None = None
        pf_machine_ms: float | None = None
        if relay is not None:
            log(f"postfix: {messages} messages, {concurrency} sessions…")
            sink.clear()
            machine_before = MachineCpu.read()
            pf_single = await peer.throughput(relay, sink, body, messages, concurrency)
            machine = MachineCpu.read().since(machine_before)
            pf_machine_ms = per_message_ms(machine.busy / CLOCK_TICKS, pf_single.delivered)

        # 2. Postwire, single sends: the classic report plus PostgreSQL, NATS and commits.
        single, infra_usage, commits = await postwire_single(
            suite, sink, stub, sender, infra, messages, concurrency
        )
        single_rate = delivered_rate(single.phase, single.deliveries)
        pf_rate = pf_single.delivered / pf_single.seconds if pf_single and pf_single.seconds > 0 else None

        # 3. Postwire, SendBatch of 1,000.
        sink.clear()
        log(f"postwire: SendBatch of {BATCH_SIZE}, {messages} messages…")
        batch, batch_note = await send_batches(stub, sender, max(messages, BATCH_SIZE))
        batch_found = await await_deliveries(
            sink, {s.message_id for s in batch.sent}, cap_seconds=delivery_cap(len(batch.sent))
        )
        batch_problems = []
        if batch.errors and not batch_note:
            batch_problems.append(f"- **SendBatch errors**: {dict(batch.errors)} e.g. {batch.error_samples}")
        if batch_found.timed_out:
            batch_problems.append(
                f"- **SendBatch**: {len(batch.sent) - len(batch_found.received_at)} not delivered"
            )

        # 4. Idle latency, one in flight.
        pf_idle: list[float] = []
        if relay is not None:
            sink.clear()
            log("postfix: idle latency…")
            pf_idle = (await peer.idle_latency(relay, sink, body, IDLE_SAMPLES)).latencies
        sink.clear()
        log("postwire: idle latency…")
        pw_idle = await idle_sends(stub, sender, sink, IDLE_SAMPLES)

        # 5. Latency at half of each side's maximum.
        half_count = max(100, messages // 2)
        pw_half: list[float] = []
        pw_half_accept: list[float] = []
        if single_rate:
            sink.clear()
            log(f"postwire: {half_count} calls at {single_rate / 2:.0f}/s…")
            half = await paced_sends(stub, sender, half_count, single_rate / 2)
            half_found = await await_deliveries(
                sink, {s.message_id for s in half.sent}, cap_seconds=delivery_cap(half_count)
            )
            pw_half = e2e_latencies(half, half_found)
            pw_half_accept = [s.accept_seconds for s in half.sent]
        pf_half: list[float] = []
        if relay is not None and pf_rate:
            sink.clear()
            log(f"postfix: {half_count} messages at {pf_rate / 2:.0f}/s…")
            pf_half = (
                await peer.paced_latency(relay, sink, body, half_count, pf_rate / 2, concurrency)
            ).latencies

        # 6. Overload: open loop at 3x the single-send rate (new, after every older case).
        overload: Overload | None = None
        if single_rate:
            overload = await run_overload(suite, sink, sender, single_rate, max(300, messages))

    rates = Rates(single_rate, delivered_rate(batch, batch_found), pf_rate)
    latencies = Latencies(pw_idle, pf_idle, pw_half, pf_half, pw_half_accept)
    rows = case_rows(concurrency, BATCH_SIZE, rates, latencies, postfix_note, batch_note)
    return SideBySide(
        single=single,
        infra_usage=infra_usage,
        commits=commits,
        single_machine_ms=per_message_ms(
            single.machine.busy / CLOCK_TICKS, len(single.deliveries.received_at)
        ),
        postfix_note=postfix_note,
        rows=rows,
        postfix_machine_ms=pf_machine_ms,
        postfix_rate=pf_rate,
        batch_problems=batch_problems,
        overload=overload,
    )


def rss_tree_mb(root: int) -> float | None:
    """Resident memory of a process tree (PostgreSQL's backends share pages, so this overstates)."""
    stats = proc_stats()
    pids, todo = [], [root]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        todo += [child for child, stat in stats.items() if stat.ppid == pid]
    sizes = [rss_mb(pid) for pid in pids]
    known = [s for s in sizes if s is not None]
    return sum(known) if known else None


def run(messages: int, concurrency: int) -> SideBySide:
    data_dir = Path(tempfile.mkdtemp(prefix="postwire-bench-"))
    sink = SmtpSink("127.0.0.1", 0, scripted=False)
    dns = LoopbackDns()
    suite: Suite | None = None
    relay: postfix.PostfixRelay | None = None
    keep_logs = False
    try:
        sink.start()
        dns.start()
        note = ""
        if not postfix.available():
            note = "postfix not installed"
        elif os.geteuid() != 0:
            note = "postfix needs root to start"
        else:
            relay = postfix.PostfixRelay(postfix.RelayLayout(peer.relay_root(), free_port(), sink.port))
            log(f"starting a private Postfix relay on 127.0.0.1:{relay.layout.listen_port}…")
            relay.start()
        env = production_env(ADMIN_TOKEN, dns)
        overrides = front_door_overrides()
        # A/B of load shedding: BENCH_MAX_IN_FLIGHT sets every service's POSTWIRE_MAX_IN_FLIGHT
        # (a huge value turns shedding off); unset keeps each service's default.
        if os.environ.get("BENCH_MAX_IN_FLIGHT"):
            env = {**env, "POSTWIRE_MAX_IN_FLIGHT": os.environ["BENCH_MAX_IN_FLIGHT"]}
        suite = production_suite(data_dir, sink, env, overrides, INTERNAL_TOKEN)
        log("starting NATS, PostgreSQL and the services…")
        suite.start_infrastructure()
        spawn_services(suite)
        with WebhookReceiver() as receiver:
            result = asyncio.run(measure(suite, sink, dns, receiver, relay, messages, concurrency, note))
            result.priorities = priorities_text(overrides)
            return result
    except Exception:
        keep_logs = True
        raise
    finally:
        if relay is not None:
            relay.stop()
            if not keep_logs:
                shutil.rmtree(relay.layout.root, ignore_errors=True)
        if suite is not None:
            suite.stop()
        dns.stop()
        sink.stop()
        if keep_logs:
            log(f"run failed; logs kept in {data_dir}")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)


def side_by_side_problems(result: SideBySide) -> list[str]:
    return problems(result.single) + result.batch_problems + overload_problems(result.overload)


def render_side_by_side(result: SideBySide) -> str:
    report = result.single
    per = max(1, len(report.phase.sent))
    extra = [
        ("Postfix delivered/s", figure(result.postfix_rate)),
        ("ratio", ratio_text(ratio(delivered_rate(report.phase, report.deliveries), result.postfix_rate))),
        ("machine CPU ms/msg", figure(result.single_machine_ms)),
        ("Postfix machine CPU ms/msg", figure(result.postfix_machine_ms)),
        ("PG commits/msg", "n/a" if result.commits is None else f"{result.commits / per:.2f}"),
    ]
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    lines = ["# Postwire send-path benchmark, beside a Postfix relay", "", *environment()]
    # A shared machine skews every figure; the load average at the end says whether it was shared.
    lines.append(f"- load average at the end (1, 5, 15 min): {load} on {os.cpu_count()} CPUs")
    lines += [
        "- Postwire: From on a domain verified through loopback DNS (DKIM RSA + Ed25519, return paths),"
        " one DELIVERED webhook, /metrics on every service, log level INFO, tracing at its default",
        f"- Postfix: {result.postfix_note or 'private relay, disk queue, defaults, into the same sink'}",
        f"- CPU priorities: {result.priorities or 'not recorded'}",
        "",
        "Side by side (one run, interleaved in the order below):",
        "",
        *cases_table(result.rows),
        "",
        "Single sends, the classic columns (Postwire) and new ones to the right:",
        "",
        *results_table(report, extra),
        "",
        "Per service, over the single-send run (warm-up excluded); RSS at the end:",
        "",
        *usage_table(report, result.infra_usage),
        "",
        machine_line(report),
        "",
    ]
    if result.overload is not None:
        accept_p99 = percentile([s.accept_seconds for s in report.phase.sent], 99)
        lines += [
            "Overload: SendEmail open loop at 3x the single-send delivered rate (refused = RESOURCE_EXHAUSTED"
            " or UNAVAILABLE with RetryInfo):",
            "",
            *overload_table(result.overload, accept_p99),
            "",
        ]
    issues = side_by_side_problems(result)
    clean = "No send errors; every accepted message was delivered exactly once."
    lines += ["Problems:", "", *issues] if issues else [clean]
    return "\n".join(lines) + "\n"
