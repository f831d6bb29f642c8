"""PostgreSQL transactions split by service, from the server's statement log.

`pg_stat_database.xact_commit` (the bench's "PG commits/msg") counts every transaction but cannot
say whose. Every pool sets `application_name=postwire-<service>`, so with `log_statement='all'`
and `log_line_prefix='%m %a %p '` the log names the service and backend of each statement:

    python -m bench.commits_by_app enable 5432          # on a running (embedded) PostgreSQL
    python -m bench.commits_by_app count postgres.log --messages 600 [--since HH:MM:SS --until HH:MM:SS]

`count` replays each backend's statements: an explicit BEGIN … COMMIT is one transaction, and a
statement outside one is a transaction of its own (as PostgreSQL counts them). The statements that
open a transaction are listed per service, so a breakdown reads "router: 0.3 lease + 0.3 routed".
Logging every statement costs PostgreSQL CPU: use it in a run of its own, not for CPU figures.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

import asyncpg

# "2026-12-02 06:20:01.123 UTC postwire-router 12345 LOG:  execute __asyncpg_stmt_1__: UPDATE …"
_LINE = re.compile(
    r"^\S+ (?P<time>\d\d:\d\d:\d\d)\.\d+ \S+ (?P<app>\S*) (?P<pid>\d+) LOG:  "
    r"(?:statement|execute [^:]*): (?P<sql>.*)$"
)


async def enable(port: int) -> None:
    conn = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres")
    try:
        await conn.execute("ALTER SYSTEM SET log_statement = 'all'")
        await conn.execute("ALTER SYSTEM SET log_line_prefix = '%m %a %p '")
        await conn.execute("SELECT pg_reload_conf()")
    finally:
        await conn.close()


def _shape(sql: str) -> str:
    """The statement's first words, enough to tell statements apart in a table."""
    return re.sub(r"\s+", " ", sql).strip()[:70]


def count(path: Path, since: str, until: str) -> tuple[Counter[str], dict[str, Counter[str]]]:
    """Transactions per application, and per application the statement that opened each."""
    in_tx: dict[str, str | None] = {}
    totals: Counter[str] = Counter()
    openers: dict[str, Counter[str]] = defaultdict(Counter)
    with path.open(errors="replace") as log:
        for line in log:
            m = _LINE.match(line)
            if m is None or not (since <= m["time"] <= until):
                continue
            app, pid, sql = m["app"] or "(none)", m["pid"], m["sql"].strip()
            word = sql.split(None, 1)[0].rstrip(";").upper() if sql else ""
            if word in ("BEGIN", "START"):
                in_tx[pid] = ""
                continue
            if word in ("COMMIT", "ROLLBACK", "END"):
                opener = in_tx.pop(pid, None)
                totals[app] += 1
                openers[app][f"tx: {opener or '(empty)'}"] += 1
                continue
            if pid in in_tx:
                if not in_tx[pid]:
                    in_tx[pid] = _shape(sql)
                continue
            totals[app] += 1
            openers[app][_shape(sql)] += 1
    return totals, openers


def report(totals: Counter[str], openers: dict[str, Counter[str]], messages: int) -> str:
    lines = ["| application | transactions/msg | opened by (per msg) |", "|:---|---:|:---|"]
    for app, n in totals.most_common():
        top = "; ".join(f"{c / messages:.2f} {s}" for s, c in openers[app].most_common(6))
        lines.append(f"| {app} | {n / messages:.2f} | {top} |")
    lines.append(f"| **all** | {sum(totals.values()) / messages:.2f} | |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.commits_by_app")
    sub = parser.add_subparsers(dest="command", required=True)
    on = sub.add_parser("enable")
    on.add_argument("port", type=int)
    tally = sub.add_parser("count")
    tally.add_argument("log", type=Path)
    tally.add_argument("--messages", type=int, required=True)
    tally.add_argument("--since", default="00:00:00")
    tally.add_argument("--until", default="99:99:99")
    args = parser.parse_args(argv)
    if args.command == "enable":
        asyncio.run(enable(args.port))
        return 0
    totals, openers = count(args.log, args.since, args.until)
    print(report(totals, openers, args.messages))
    return 0


if __name__ == "__main__":
    sys.exit(main())
