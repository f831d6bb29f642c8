"""PostgreSQL transactions per message, split by service: `python -m bench.commits`.

pg_stat_database counts commits for the whole database; this splits them by the pool's
application_name (`postwire-<service>`). After a warm-up it turns on `log_statement = 'all'` with
the application and backend pid in every line (ALTER SYSTEM + pg_reload_conf()), sends N messages
in the classic shape, waits for their delivery, turns logging off again and reads the log: per
backend, BEGIN … COMMIT/ROLLBACK is one transaction and every statement outside one is a
transaction of its own. Logging every statement costs PostgreSQL CPU, so run this apart from the
CPU figures of `python -m bench`.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import grpc
from postwire.v1 import admin_service_pb2, mail_service_pb2_grpc

from bench.__main__ import (
    await_deliveries,
    create_api_key,
    delivery_cap,
    log,
    make_suite,
    send_many,
    spawn_services,
    wait_ready,
    warm_up,
)
from libs.capture import SmtpSink
from libs.embedded.suite import Suite

# "<application>|<pid>| LOG:  statement: BEGIN" or "... LOG:  execute __asyncpg_stmt_3__: INSERT …".
# Searched, not anchored: a long entry (a bytea parameter) can reach the log without its newline,
# with the next entry glued to its end.
_LINE = re.compile(
    r"(?P<app>postwire-[a-z]+(?:-[a-z]+)*|)\|(?P<pid>\d+)\| LOG:  (?:statement|execute [^:]*): (?P<sql>.*)$"
)


@dataclass
class Usage:
    transactions: int = 0
    statements: int = 0
    # First words of the statements run outside an explicit transaction, with counts.
    single: collections.Counter[str] = field(default_factory=collections.Counter)
    explicit: collections.Counter[str] = field(default_factory=collections.Counter)


def count(lines: Sequence[str]) -> dict[str, Usage]:
    """Transactions and statements per application from `log_statement = 'all'` lines."""
    usage: dict[str, Usage] = collections.defaultdict(Usage)
    open_tx: dict[str, list[str]] = {}
    for line in lines:
        match = _LINE.search(line)
        if match is None:
            continue
        app, pid, sql = match["app"] or "(none)", match["pid"], match["sql"].strip()
        head = sql.split(None, 1)[0].upper().rstrip(";") if sql else ""
        u = usage[app]
        u.statements += 1
        if head in ("BEGIN", "START"):
            open_tx[pid] = []
        elif head in ("COMMIT", "ROLLBACK", "END"):
            body = open_tx.pop(pid, [])
            u.transactions += 1
            u.explicit[" + ".join(body[:6]) + (" …" if len(body) > 6 else "")] += 1
        elif pid in open_tx:
            open_tx[pid].append(_shape(sql))
        else:
            u.transactions += 1
            u.single[_shape(sql)] += 1
    return usage


def _shape(sql: str) -> str:
    words = sql.split()
    head = words[0].upper() if words else ""
    if head in ("INSERT", "DELETE") and len(words) > 2:
        return f"{head} {words[2]}"
    if head == "UPDATE" and len(words) > 1:
        return f"UPDATE {words[1]}"
    if head in ("SELECT", "WITH"):
        table = next((words[i + 1] for i, w in enumerate(words[:-1]) if w.upper() == "FROM"), "?")
        return f"{head} … FROM {table}"
    return head


async def _logging(database_url: str, on: bool) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        if on:
            await conn.execute("ALTER SYSTEM SET log_statement = 'all'")
            await conn.execute("ALTER SYSTEM SET log_line_prefix = '%a|%p| '")
        else:
            await conn.execute("ALTER SYSTEM RESET log_statement")
            await conn.execute("ALTER SYSTEM RESET log_line_prefix")
        await conn.execute("SELECT pg_reload_conf()")
    finally:
        await conn.close()


# Generous enough never to refuse a bench message, so every admission runs the meter.
_LIMITS = (
    admin_service_pb2.StreamLimits(
        stream="*", recipients_per_second=100_000.0, burst=100_000, recipients_per_day=10**9
    ),
    admin_service_pb2.StreamLimits(
        stream="transactional", recipients_per_second=100_000.0, recipients_per_month=10**9
    ),
)


async def _measure(
    data_dir: Path, suite: Suite, sink: SmtpSink, messages: int, concurrency: int, *, limits: bool
) -> str:
    await wait_ready(suite)
    api_key = await create_api_key(suite, _LIMITS if limits else ())
    if suite.database_url is None:
        raise RuntimeError("the suite has no database")
    pg_log = next(data_dir.rglob("postgres.log"))
    async with grpc.aio.insecure_channel(suite.ports.addr("edge")) as channel:
        stub = mail_service_pb2_grpc.MailServiceStub(channel)
        await warm_up(stub, api_key, sink, concurrency)
        await _logging(suite.database_url, True)
        await asyncio.sleep(1)  # the reload reaches every backend at its next statement
        start = pg_log.stat().st_size
        phase = await send_many(stub, api_key, messages, concurrency)
        await await_deliveries(sink, {s.message_id for s in phase.sent}, cap_seconds=delivery_cap(messages))
        await asyncio.sleep(2)  # outbox deletions and the last status writes
        end = pg_log.stat().st_size
        await _logging(suite.database_url, False)
    with pg_log.open("rb") as f:
        f.seek(start)
        lines = f.read(end - start).decode(errors="replace").splitlines()
    return report(count(lines), len(phase.sent))


def report(usage: dict[str, Usage], sent: int) -> str:
    out = [
        f"{sent} messages accepted; PostgreSQL transactions per message by application:",
        "",
        "| application | transactions/msg | statements/msg |",
        "|:---|---:|---:|",
    ]
    for app, u in sorted(usage.items(), key=lambda kv: -kv[1].transactions):
        out.append(f"| {app} | {u.transactions / sent:.2f} | {u.statements / sent:.2f} |")
    total = sum(u.transactions for u in usage.values())
    out += [f"| **all** | {total / sent:.2f} | {sum(u.statements for u in usage.values()) / sent:.2f} |", ""]
    for app, u in sorted(usage.items()):
        out.append(f"{app}:")
        for shape, n in (u.explicit + u.single).most_common(8):
            kind = "tx" if shape in u.explicit else "single"
            out.append(f"  {n / sent:6.2f}/msg  {kind:6}  {shape}")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.commits", description=__doc__)
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--limits",
        action="store_true",
        help="give the tenant rate limits and quotas, so admission charges them",
    )
    args = parser.parse_args(argv)
    data_dir = Path(tempfile.mkdtemp(prefix="postwire-commits-"))
    sink = SmtpSink("127.0.0.1", 0, scripted=False)
    suite: Suite | None = None
    try:
        sink.start()
        suite = make_suite(data_dir, sink)
        log("starting NATS, PostgreSQL and the services…")
        suite.start_infrastructure()
        spawn_services(suite)
        text = asyncio.run(
            _measure(data_dir, suite, sink, args.messages, args.concurrency, limits=args.limits)
        )
    finally:
        if suite is not None:
            suite.stop()
        sink.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
