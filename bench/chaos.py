"""`python -m bench.chaos`: inject one fault per scenario under steady load and reconcile the ledger.

Starts an SMTP sink and a whole suite (embedded NATS and PostgreSQL, which this module owns so it
can restart and wipe them, plus every service as a process) on free ports in a temp directory.
Each scenario loads the edge with SendEmail calls carrying idempotency keys, injects one fault,
waits until everything accepted is terminal in PostgreSQL, and at the end reconciles the ledger
of accepted ids against the sink's receipts and the recipients' states. Prints a markdown table
(also written to --out) and exits 1 on any loss, stuck message, unexpected duplicate or
INTERNAL/UNKNOWN answer.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import grpc
from postwire.v1 import mail_service_pb2, mail_service_pb2_grpc

import bench.__main__ as bench_main
from bench.compare import percentile
from libs.capture import SmtpSink
from libs.embedded.nats_server import start_nats
from libs.embedded.ports import free_port
from libs.embedded.postgres import start_postgres
from libs.embedded.process import ManagedProcess
from libs.embedded.suite import SERVICES, Suite, SuitePorts
from libs.grpcx.status import retry_delay as hinted_delay
from libs.mail.states import TERMINAL_STATES
from services.mta_worker.smtp_session import Timeouts

DEFAULT_OUT = Path("bench/results/chaos.md")
SMOKE_OUT = Path("bench/results/chaos-smoke.md")
MESSAGE_ID_HEADER = "X-Postwire-Message-Id"

# The services run with the short timings the integration tests use, so a fault heals within a
# scenario: a killed worker's message comes back after ACK_WAIT, a stalled one after STALL.
ACK_WAIT_SECONDS = 6
STALL_SECONDS = 3
SHUTDOWN_GRACE_SECONDS = 3
SMTP_TIMEOUT_SECONDS = 10
# A destination that defers everything makes its recipients EXPIRED after this: terminal, so the
# ledger can close. Only SMTP deferrals count towards it, and other mail is never deferred here.
GIVE_UP_SECONDS = 20
SERVICE_ENV = {
    "POSTWIRE_RETRY_BASE_SECONDS": "1",
    "POSTWIRE_RETRY_MAX_SECONDS": "2",
    "POSTWIRE_RETRY_GIVE_UP_SECONDS": str(GIVE_UP_SECONDS),
    "POSTWIRE_SWEEP_INTERVAL_SECONDS": "0.5",
    "POSTWIRE_STALL_SECONDS": str(STALL_SECONDS),
    "POSTWIRE_SHUTDOWN_GRACE_SECONDS": str(SHUTDOWN_GRACE_SECONDS),
    **Timeouts.env_all(SMTP_TIMEOUT_SECONDS),
    "POSTWIRE_ACK_WAIT_SECONDS": str(ACK_WAIT_SECONDS),
    "POSTWIRE_LOG_LEVEL": "WARNING",
    "POSTWIRE_ENV": "dev",
    "POSTWIRE_DEV_FROM_DOMAINS": "example.com",
    "POSTWIRE_ADMIN_TOKEN": bench_main.ADMIN_TOKEN,
    "POSTWIRE_INTERNAL_TOKEN": bench_main.INTERNAL_TOKEN,
}

# Sink directives (libs/capture/smtp_sink.py), by recipient local part. Held and tarpitted replies
# stay below SMTP_TIMEOUT_SECONDS, so they slow delivery without turning into deferrals.
HOLD_DIRECTIVE = "hold8"  # record at ".", answer 8 s later: longer than the worker's grace
TARPIT_DIRECTIVE = "slow3"  # RCPT and "." each answered 3 s late
DEFER_DIRECTIVE = "tempfail"  # 451 at RCPT, forever

# The load client: a careful caller retries only what the API says is worth retrying.
CALL_TIMEOUT_SECONDS = 30.0
RETRY_ATTEMPTS = 60
RETRY_BUDGET_SECONDS = 90.0
RETRY_BACKOFF_FIRST = 0.2
RETRY_BACKOFF_CAP = 2.0
RETRY_INFO_CAP = 5.0
# Fail-fast reconnects: the default channel backoff grows to minutes while the edge is down.
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 1000),
]

# Waits are generous bounds, never expectations: a loaded 2-core machine must still pass.
TERMINAL_BOUND_SECONDS = 180.0
SETTLE_SECONDS = ACK_WAIT_SECONDS + 6.0  # late redeliveries (duplicates) land before the recount
HELD_WAIT_SECONDS = 20.0
STOP_WAIT_SECONDS = 60.0
POLL_SECONDS = 0.5
STOPPED_AFTER_OUTAGE = ("router", "mta_worker", "events")  # the consumers a broken bus can wedge
BAD_CODES = frozenset({"INTERNAL", "UNKNOWN"})


# -- scenarios -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    fault: str  # none | kill | sigterm | nats_restart | jetstream_wipe | postgres_restart | defer | tarpit
    service: str = ""
    # Every n-th message goes to the directive's recipients; the rest is "other mail".
    directive: str = ""
    every: int = 0

    @property
    def flood(self) -> bool:
        """A misbehaving destination rather than a broken component: it starts at the fault time,
        so the calls before it are this scenario's own baseline for other mail."""
        return self.fault in ("defer", "tarpit")

    @property
    def worker_stop(self) -> bool:
        """Stops mta_worker mid-transaction: duplicates are possible, bounded by the open "." count."""
        return self.service == "mta_worker"


SCENARIOS = (
    Scenario("baseline", "none"),
    *(Scenario(f"kill -9 {name}", "kill", name) for name in SERVICES),
    Scenario('kill -9 mta_worker during held "."', "kill", "mta_worker", HOLD_DIRECTIVE, 10),
    Scenario("NATS restart", "nats_restart"),
    Scenario("JetStream store wipe", "jetstream_wipe"),
    Scenario("PostgreSQL restart", "postgres_restart"),
    Scenario('SIGTERM mta_worker during held "."', "sigterm", "mta_worker", HOLD_DIRECTIVE, 10),
    Scenario("destination defers everything", "defer", directive=DEFER_DIRECTIVE, every=2),
    Scenario("destination tarpits", "tarpit", directive=TARPIT_DIRECTIVE, every=2),
)
# The smoke run (part of `make test`): RELIABILITY.md's N1 smoke — one kill -9 of each of the six
# services, a NATS restart, a PostgreSQL restart, plus the JetStream store wipe — within ~3 minutes
# on 2 cores. The edge kill, the held-"." worker stops and the two slow destinations are in the
# full run only, to keep the smoke short.
SMOKE_NAMES = (
    "kill -9 policy",
    "kill -9 template",
    "kill -9 events",
    "kill -9 submission",
    "kill -9 router",
    "kill -9 mta_worker",
    "NATS restart",
    "JetStream store wipe",
    "PostgreSQL restart",
)


@dataclass(frozen=True, slots=True)
class Profile:
    rate: float  # SendEmail calls started per second
    seconds: float  # load duration
    fault_at: float  # seconds into the load


FULL = Profile(rate=20.0, seconds=12.0, fault_at=4.0)
SMOKE = Profile(rate=5.0, seconds=6.0, fault_at=2.0)  # 9 scenarios x 30 = 270 messages


# -- infrastructure we can restart -----------------------------------------------------------------


class Infra:
    """Embedded NATS and PostgreSQL on fixed free ports, so a restart comes back at the same URL."""

    def __init__(self, data_dir: Path) -> None:
        self.nats_dir = data_dir / "nats"
        self.pg_dir = data_dir / "postgres"
        self.nats_port = free_port()
        self.pg_port = free_port()
        self.nats: ManagedProcess | None = None
        self.pg: ManagedProcess | None = None
        self.nats_url = ""
        self.database_url = ""

    def start(self) -> None:
        self.start_nats()
        self.start_postgres()

    def start_nats(self) -> None:
        self.nats, self.nats_url = start_nats(self.nats_dir, port=self.nats_port)

    def start_postgres(self) -> None:
        self.pg, self.database_url = start_postgres(self.pg_dir, port=self.pg_port)

    def stop_nats(self) -> float:
        assert self.nats is not None
        return timed_stop(self.nats, signal.SIGTERM)

    def stop_postgres(self) -> float:
        # SIGINT is PostgreSQL's fast shutdown (pg_ctl's default); SIGTERM would wait for every
        # pooled connection to leave, which the services never do on their own.
        assert self.pg is not None
        return timed_stop(self.pg, signal.SIGINT)

    def wipe_jetstream(self) -> None:
        shutil.rmtree(self.nats_dir / "jetstream", ignore_errors=True)

    def stop(self) -> None:
        for proc in (self.pg, self.nats):
            if proc is not None:
                proc.stop(timeout=30, sig=signal.SIGINT if proc is self.pg else signal.SIGTERM)


def timed_stop(proc: ManagedProcess, sig: int) -> float:
    """Signal and wait up to STOP_WAIT_SECONDS; the seconds it took to exit (inf if it was killed)."""
    assert proc.proc is not None
    started = time.monotonic()
    if proc.proc.poll() is None:
        proc.proc.send_signal(sig)
        try:
            proc.proc.wait(STOP_WAIT_SECONDS)
        except Exception:  # subprocess.TimeoutExpired: it would not stop; the figure says so
            proc.kill()
            proc.stop()
            return math.inf
    took = time.monotonic() - started
    proc.stop()  # joins the log reader
    return took


# -- the load client -------------------------------------------------------------------------------


@dataclass
class Call:
    """One logical SendEmail (one idempotency key), through all its retries."""

    key: str
    kind: str  # "other" or the sink directive its recipient carries
    started: float  # time.time()
    codes: list[str] = field(default_factory=list)  # every answer, in order
    seconds: float = math.nan  # first attempt → final answer
    answered: float = math.nan  # time.time() of the final answer
    message_id: str = ""


def request_for(tag: str, index: int, kind: str, key: str) -> mail_service_pb2.SendEmailRequest:
    # Scripted mail goes to its own domain: a destination, as per-destination limits see it.
    local, domain = ("chaos", "example.com") if kind == "other" else (kind, f"{kind}.example.net")
    # `from` is a Python keyword, so the fields go in as a mapping.
    fields: dict[str, Any] = {
        "from": {"address": "chaos@example.com", "name": "Postwire Chaos"},
        "to": [{"address": f"{local}+{tag}-{index:06d}@{domain}"}],
        "subject": f"Chaos {tag} {index}",
        "text_body": f"Message {index} of fault run {tag}.\n",
        "idempotency_key": key,
    }
    return mail_service_pb2.SendEmailRequest(**fields)


def retry_delay(exc: grpc.aio.AioRpcError, attempt: int) -> float | None:
    """How long to wait before retrying with the same key, or None when retrying is wrong."""
    code = exc.code()
    if code == grpc.StatusCode.UNAVAILABLE:
        hinted = hinted_delay(exc)
        backoff = min(RETRY_BACKOFF_CAP, RETRY_BACKOFF_FIRST * 2**attempt)
        return min(RETRY_INFO_CAP, hinted) if hinted is not None else backoff
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        hinted = hinted_delay(exc)
        # Without RetryInfo the same call will never pass.
        return None if hinted is None else min(RETRY_INFO_CAP, hinted)
    return None


async def send_with_retries(
    stub: mail_service_pb2_grpc.MailServiceAsyncStub,
    request: mail_service_pb2.SendEmailRequest,
    metadata: tuple[tuple[str, str], ...],
    call: Call,
) -> None:
    start = time.perf_counter()
    for attempt in range(RETRY_ATTEMPTS):
        try:
            answer = await stub.SendEmail(request, metadata=metadata, timeout=CALL_TIMEOUT_SECONDS)
        except grpc.aio.AioRpcError as exc:
            call.codes.append(exc.code().name)
            delay = retry_delay(exc, attempt)
            if delay is None or time.perf_counter() - start + delay > RETRY_BUDGET_SECONDS:
                break
            await asyncio.sleep(delay)
            continue
        call.codes.append("OK")
        call.message_id = answer.message_id
        break
    call.seconds = time.perf_counter() - start
    call.answered = time.time()


async def steady_load(
    stub: mail_service_pb2_grpc.MailServiceAsyncStub,
    metadata: tuple[tuple[str, str], ...],
    scenario: Scenario,
    profile: Profile,
) -> list[Call]:
    """Start `rate` calls a second for `seconds`, open loop: a slow answer never slows the offer."""
    tag = uuid.uuid4().hex[:8]
    calls: list[Call] = []
    tasks: list[asyncio.Task[None]] = []
    count = max(1, round(profile.rate * profile.seconds))
    begin = time.monotonic()
    flood_from = round(profile.rate * profile.fault_at) if scenario.flood else 0
    for index in range(count):
        await asyncio.sleep(max(0.0, begin + index / profile.rate - time.monotonic()))
        scripted = scenario.every and index >= flood_from and index % scenario.every == 0
        kind = scenario.directive if scripted else "other"
        call = Call(key=f"chaos-{tag}-{index}", kind=kind, started=time.time())
        calls.append(call)
        request = request_for(tag, index, kind, call.key)
        tasks.append(asyncio.create_task(send_with_retries(stub, request, metadata, call)))
    await asyncio.gather(*tasks)
    return calls


# -- one scenario ----------------------------------------------------------------------------------


@dataclass
class Outcome:
    scenario: Scenario
    calls: list[Call] = field(default_factory=list)
    fault_start: float = math.nan
    fault_end: float = math.nan
    shutdown: dict[str, float] = field(default_factory=dict)
    past_dot: int | None = None  # transactions past "." and open when mta_worker was stopped
    not_terminal: set[str] = field(default_factory=set)  # accepted ids not terminal at the bound
    states: dict[str, tuple[str, tuple[str, ...]]] = field(default_factory=dict)

    @property
    def accepted(self) -> list[Call]:
        return [c for c in self.calls if c.message_id]


class Runner:
    def __init__(self, suite: Suite, infra: Infra, sink: SmtpSink, profile: Profile, *, smoke: bool) -> None:
        self.smoke = smoke
        self.suite = suite
        self.infra = infra
        self.sink = sink
        self.profile = profile

    async def run(self, scenarios: Sequence[Scenario]) -> list[Outcome]:
        await bench_main.wait_ready(self.suite)
        api_key = await bench_main.create_api_key(self.suite)
        metadata = (("authorization", f"Bearer {api_key}"),)
        outcomes = []
        async with grpc.aio.insecure_channel(
            self.suite.ports.addr("edge"), options=CHANNEL_OPTIONS
        ) as channel:
            stub = mail_service_pb2_grpc.MailServiceStub(channel)
            for scenario in scenarios:
                log(f"scenario: {scenario.name}")
                outcome = await self.scenario(stub, metadata, scenario)
                log(
                    f"  {len(outcome.accepted)}/{len(outcome.calls)} accepted, "
                    f"{len(outcome.not_terminal)} not terminal at the bound"
                )
                outcomes.append(outcome)
        log(f"settling {SETTLE_SECONDS:.0f}s for late redeliveries, then reconciling…")
        await asyncio.sleep(SETTLE_SECONDS)
        for outcome in outcomes:
            outcome.states = await self.states([c.message_id for c in outcome.accepted])
        return outcomes

    async def scenario(
        self,
        stub: mail_service_pb2_grpc.MailServiceAsyncStub,
        metadata: tuple[tuple[str, str], ...],
        scenario: Scenario,
    ) -> Outcome:
        outcome = Outcome(scenario)
        load = asyncio.create_task(steady_load(stub, metadata, scenario, self.profile))
        if scenario.fault in ("none", "defer", "tarpit"):
            if scenario.flood:
                await asyncio.sleep(self.profile.fault_at)
            outcome.fault_start = time.time()
            outcome.calls = await load
            outcome.fault_end = time.time()
        else:
            await asyncio.sleep(self.profile.fault_at)
            await self.inject(scenario, outcome)
            outcome.calls = await load
        await self.await_terminal(outcome)
        if scenario.fault in ("nats_restart", "jetstream_wipe") and not self.smoke:
            # After the bus came back, do the consumers still stop within their grace?
            await self.graceful_restart(outcome, STOPPED_AFTER_OUTAGE)
        return outcome

    async def inject(self, scenario: Scenario, outcome: Outcome) -> None:
        infra = self.infra
        if scenario.directive == HOLD_DIRECTIVE:
            await self.await_held()
        outcome.fault_start = time.time()
        if scenario.worker_stop:
            outcome.past_dot = self.sink.open_past_dot(outcome.fault_start)
        if scenario.fault == "kill":
            self.suite.processes[scenario.service].kill()
            self.suite.processes[scenario.service].stop()
            await self.restart_service(scenario.service)
        elif scenario.fault == "sigterm":
            proc = self.suite.processes[scenario.service]
            outcome.shutdown[scenario.service] = await asyncio.to_thread(timed_stop, proc, signal.SIGTERM)
            await self.restart_service(scenario.service)
        elif scenario.fault in ("nats_restart", "jetstream_wipe"):
            outcome.shutdown["nats"] = await asyncio.to_thread(infra.stop_nats)
            if scenario.fault == "jetstream_wipe":
                infra.wipe_jetstream()
            await asyncio.to_thread(infra.start_nats)
        elif scenario.fault == "postgres_restart":
            outcome.shutdown["postgres"] = await asyncio.to_thread(infra.stop_postgres)
            await asyncio.to_thread(infra.start_postgres)
        else:
            raise ValueError(f"unknown fault {scenario.fault!r}")
        outcome.fault_end = time.time()

    async def await_held(self) -> None:
        """Wait until a held final "." is in progress, so the SIGTERM lands inside one."""
        deadline = time.monotonic() + HELD_WAIT_SECONDS
        while time.monotonic() < deadline:
            if self.sink.open_past_dot(time.time()):
                return
            await asyncio.sleep(0.1)

    async def restart_service(self, name: str) -> None:
        self.suite.start_service(name, wait=False)
        await bench_main.wait_serving(self.suite, name)

    async def graceful_restart(self, outcome: Outcome, names: Sequence[str]) -> None:
        procs = [self.suite.processes[name] for name in names]
        took = await asyncio.gather(*(asyncio.to_thread(timed_stop, p, signal.SIGTERM) for p in procs))
        outcome.shutdown.update(zip(names, took, strict=True))
        for name in names:
            self.suite.start_service(name, wait=False)
        await asyncio.gather(*(bench_main.wait_serving(self.suite, name) for name in names))

    async def await_terminal(self, outcome: Outcome) -> None:
        ids = [c.message_id for c in outcome.accepted]
        deadline = time.monotonic() + TERMINAL_BOUND_SECONDS
        pending = set(ids)
        while pending and time.monotonic() < deadline:
            try:
                states = await self.states(sorted(pending))
            except (OSError, asyncpg.PostgresError):  # PostgreSQL still coming back
                await asyncio.sleep(POLL_SECONDS)
                continue
            pending = {i for i in pending if not terminal(states.get(i))}
            if pending:
                await asyncio.sleep(POLL_SECONDS)
        outcome.not_terminal = pending

    async def states(self, ids: Sequence[str]) -> dict[str, tuple[str, tuple[str, ...]]]:
        """message id → (message state, recipient states)."""
        if not ids:
            return {}
        conn = await asyncpg.connect(self.infra.database_url, timeout=10)
        try:
            rows = await conn.fetch(
                "SELECT m.id::text AS id, m.state, array_remove(array_agg(r.state), NULL) AS recipients"
                " FROM messages m LEFT JOIN recipients r ON r.message_id = m.id"
                " WHERE m.id = ANY($1::uuid[]) GROUP BY m.id, m.state",
                list(ids),
            )
        finally:
            await conn.close()
        return {row["id"]: (row["state"], tuple(row["recipients"])) for row in rows}


def terminal(state: tuple[str, tuple[str, ...]] | None) -> bool:
    if state is None:
        return False
    message_state, recipients = state
    return message_state == "failed" or (bool(recipients) and all(r in TERMINAL_STATES for r in recipients))


# -- reconciliation --------------------------------------------------------------------------------


@dataclass
class Row:
    outcome: Outcome
    accepted: int = 0
    delivered: int = 0
    expired: int = 0
    lost: int = 0
    duplicates: int = 0
    stuck: int = 0
    mismatched: int = 0
    # Message id, PostgreSQL (message state, recipient states), copies at the sink: for a post-mortem.
    mismatches: list[tuple[str, tuple[str, tuple[str, ...]] | None, int]] = field(default_factory=list)
    refused: int = 0
    answers: Counter[str] = field(default_factory=Counter)
    recovery: float = math.nan
    accept_p99: float | None = None
    other_p99: float | None = None
    baseline_p99: float | None = None  # other mail before the flood (baseline scenario: itself)
    failures: list[str] = field(default_factory=list)


def receipts(sink: SmtpSink) -> tuple[Counter[str], dict[str, float]]:
    counts: Counter[str] = Counter()
    first: dict[str, float] = {}
    for message in sink.messages():
        mid = message.header(MESSAGE_ID_HEADER)
        if mid is None:
            continue
        counts[mid] += 1
        first.setdefault(mid, message.received_at)
    return counts, first


def reconcile(outcome: Outcome, counts: Counter[str], first: dict[str, float]) -> Row:
    scenario = outcome.scenario
    row = Row(outcome)
    for call in outcome.calls:
        row.answers.update(call.codes)
        if not call.message_id:
            row.refused += 1
    row.accepted = len(outcome.accepted)
    expect_delivery = [c for c in outcome.accepted if c.kind != DEFER_DIRECTIVE]
    for call in outcome.accepted:
        mid, got = call.message_id, counts[call.message_id]
        state = outcome.states.get(mid)
        recipients = state[1] if state else ()
        if mid in outcome.not_terminal:
            row.stuck += 1
        elif call.kind == DEFER_DIRECTIVE:
            row.expired += recipients == ("expired",)
            if got > 0 or recipients != ("expired",):
                row.mismatches.append((mid, state, got))
        elif got == 0:
            row.lost += 1
        else:
            row.delivered += 1
            if recipients != ("delivered",):
                row.mismatches.append((mid, state, got))
        row.duplicates += max(0, got - 1)
    if scenario.fault not in ("none", "defer", "tarpit"):
        backlog = [
            first[c.message_id]
            for c in expect_delivery
            if c.started <= outcome.fault_end and c.message_id in first
        ]
        row.recovery = max(0.0, max(backlog, default=outcome.fault_end) - outcome.fault_end)
    during = [c.seconds for c in outcome.calls if outcome.fault_start <= c.started <= outcome.fault_end]
    row.accept_p99 = percentile(during, 99)

    def other_p99(calls: Sequence[Call]) -> float | None:
        waits = [
            first[c.message_id] - c.answered for c in calls if c.kind == "other" and c.message_id in first
        ]
        return percentile(waits, 99)

    if scenario.flood:
        row.other_p99 = other_p99([c for c in expect_delivery if c.started >= outcome.fault_start])
        row.baseline_p99 = other_p99([c for c in expect_delivery if c.started < outcome.fault_start])
    else:
        row.other_p99 = row.baseline_p99 = other_p99(expect_delivery)

    if row.lost:
        row.failures.append(f"{row.lost} lost")
    if row.stuck:
        row.failures.append(f"{row.stuck} stuck")
    bad = sum(row.answers[code] for code in BAD_CODES)
    if bad:
        row.failures.append(f"{bad} INTERNAL/UNKNOWN answers")
    row.mismatched = len(row.mismatches)
    if row.mismatched:
        row.failures.append(f"{row.mismatched} whose PostgreSQL state disagrees with the sink")
        for mid, state, got in row.mismatches:
            log(f"  {scenario.name}: message {mid} is {state} in PostgreSQL, {got} cop(ies) at the sink")
    if row.duplicates and not scenario.worker_stop:
        row.failures.append(f"{row.duplicates} duplicates without a worker kill")
    if scenario.worker_stop and row.duplicates > (outcome.past_dot or 0):
        row.failures.append(
            f'{row.duplicates} duplicates > {outcome.past_dot} transactions past "." at the kill'
        )
    return row


# -- report ----------------------------------------------------------------------------------------


HEADER = [
    "scenario",
    "accepted",
    "delivered",
    "lost",
    "duplicates",
    "stuck",
    'dups / past "." at kill',
    "shutdown s",
    "recovery s",
    "accept p99 ms (fault)",
    "other mail p99 ms / baseline",
    "answers",
    "result",
]


def render_row(row: Row) -> list[str]:
    outcome = row.outcome
    scenario = outcome.scenario
    shutdown = ", ".join(f"{name} {secs(took)}" for name, took in outcome.shutdown.items()) or "—"
    dots = f"{row.duplicates} / {outcome.past_dot}" if scenario.worker_stop else "—"
    if scenario.fault in ("defer", "tarpit", "none"):
        other = f"{bench_main.ms(row.other_p99)} / {bench_main.ms(row.baseline_p99)}"
    else:
        other = "—"
    delivered = str(row.delivered) + (f" (+{row.expired} expired)" if row.expired else "")
    answers = ", ".join(f"{code} {n}" for code, n in sorted(row.answers.items(), key=lambda kv: -kv[1]))
    result = "ok" if not row.failures else "FAIL: " + "; ".join(row.failures)
    if row.refused:
        result += f" ({row.refused} calls never accepted)"
    return [
        scenario.name,
        str(row.accepted),
        delivered,
        str(row.lost),
        str(row.duplicates),
        str(row.stuck),
        dots,
        shutdown,
        "—" if math.isnan(row.recovery) else secs(row.recovery),
        bench_main.ms(row.accept_p99),
        other,
        answers,
        result,
    ]


def secs(seconds: float) -> str:
    return "killed after 60" if math.isinf(seconds) else f"{seconds:.1f}"


def targets(rows: Sequence[Row]) -> list[str]:
    """Issue 9's figures (items 3-6) against what this run measured; shown, not part of the exit status
    (except duplicates per worker stop, which are)."""
    lines = []
    slow = [
        f"{r.outcome.scenario.name}: {name} {secs(took)}"
        for r in rows
        for name, took in r.outcome.shutdown.items()
        if name not in ("nats", "postgres") and took > SHUTDOWN_GRACE_SECONDS + 2
    ]
    lines.append(
        f"- shutdown ≤ grace ({SHUTDOWN_GRACE_SECONDS} s + 2 s): "
        + ("met" if not slow else "missed — " + "; ".join(slow))
    )
    for r in rows:
        name = r.outcome.scenario.name
        if r.outcome.scenario.fault == "jetstream_wipe" and not math.isnan(r.recovery):
            limit = STALL_SECONDS + 10
            lines.append(
                f"- wipe recovery ≤ stall + 10 s ({limit} s): {secs(r.recovery)} s — {'met' if r.recovery <= limit else 'missed'}"
            )
        if r.outcome.scenario.fault == "nats_restart" and r.accept_p99 is not None:
            lines.append(
                f"- SendEmail p99 ≤ 500 ms during a NATS outage: {bench_main.ms(r.accept_p99)} ms — "
                f"{'met' if r.accept_p99 <= 0.5 else 'missed'}"
            )
        if r.outcome.scenario.worker_stop:
            ok = r.duplicates <= (r.outcome.past_dot or 0)
            lines.append(
                f'- {name}: duplicates {r.duplicates} ≤ past "." {r.outcome.past_dot} — {"met" if ok else "missed"}'
            )
        baseline_p99 = r.baseline_p99
        if r.outcome.scenario.flood and r.other_p99 is not None and baseline_p99:
            ok = r.other_p99 <= 2 * baseline_p99
            lines.append(
                f"- {name}: other mail p99 {bench_main.ms(r.other_p99)} ms ≤ 2 x baseline "
                f"{bench_main.ms(baseline_p99)} ms — {'met' if ok else 'missed'}"
            )
    return lines


def render(rows: Sequence[Row], profile: Profile, smoke: bool, elapsed: float) -> str:
    body = [render_row(r) for r in rows]
    failed = [r for r in rows if r.failures]
    lines = [
        f"# Postwire fault runs ({'smoke' if smoke else 'full'})",
        "",
        *bench_main.environment(),
        f"- load: {profile.rate:g} SendEmail/s for {profile.seconds:g} s per scenario, fault at "
        f"{profile.fault_at:g} s; whole run {elapsed:.0f} s",
        "",
        *bench_main.table(HEADER, body),
        "",
        "Targets of issue 9 (items 3-6):",
        "",
        *targets(rows),
        "",
        f"**{len(failed)} of {len(rows)} scenarios failed.**" if failed else "**Every scenario passed.**",
    ]
    return "\n".join(lines) + "\n"


# -- entry point -----------------------------------------------------------------------------------


def log(text: str) -> None:
    print(f"[chaos] {text}", file=sys.stderr, flush=True)


def run(
    scenarios: Sequence[Scenario], profile: Profile, *, smoke: bool
) -> tuple[list[Row], float, Path, bool]:
    data_dir = Path(tempfile.mkdtemp(prefix="postwire-chaos-"))
    sink = SmtpSink("127.0.0.1", 0, scripted=True)
    infra = Infra(data_dir)
    suite: Suite | None = None
    keep = True
    started = time.monotonic()
    try:
        sink.start()
        log(f"starting NATS, PostgreSQL and the services in {data_dir}…")
        infra.start()
        suite = Suite(
            data_dir=data_dir,
            ports=SuitePorts.free(),
            smarthost=f"127.0.0.1:{sink.port}",
            smarthost_tls="none",
            nats_url=infra.nats_url,
            database_url=infra.database_url,
            extra_env=SERVICE_ENV,
        )
        suite.start_infrastructure()  # migrations only: NATS and PostgreSQL are ours
        bench_main.spawn_services(suite)
        outcomes = asyncio.run(Runner(suite, infra, sink, profile, smoke=smoke).run(scenarios))
        counts, first = receipts(sink)
        rows = [reconcile(o, counts, first) for o in outcomes]
        keep = any(r.failures for r in rows)
        return rows, time.monotonic() - started, data_dir, keep
    finally:
        if suite is not None:
            # All at once: after a store wipe some consumers take their whole stop timeout.
            with ThreadPoolExecutor(len(suite.processes) or 1) as pool:
                list(pool.map(lambda proc: proc.stop(timeout=30), suite.processes.values()))
        infra.stop()
        sink.stop()
        if keep:
            log(f"service logs kept in {data_dir / 'logs'}")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="the small run that is part of `make test`")
    parser.add_argument(
        "--only", action="append", default=[], help="run only scenarios whose name contains this"
    )
    parser.add_argument(
        "--out", type=Path, help=f"report file (default {DEFAULT_OUT}, {SMOKE_OUT} with --smoke)"
    )
    return parser.parse_args(argv)


def exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # through `finally`, so no process outlives us


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    profile = SMOKE if args.smoke else FULL
    scenarios = [s for s in SCENARIOS if not args.smoke or s.name in SMOKE_NAMES]
    if args.only:
        scenarios = [s for s in scenarios if s.fault == "none" or any(o in s.name for o in args.only)]
    rows, elapsed, _, _ = run(scenarios, profile, smoke=args.smoke)
    text = render(rows, profile, args.smoke, elapsed)
    print(text)
    out = args.out or (SMOKE_OUT if args.smoke else DEFAULT_OUT)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    log(f"written to {out}")
    return 1 if any(r.failures for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
