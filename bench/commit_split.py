"""`python -m bench.commit_split`: PostgreSQL transactions per service during a bench run.

Run it beside `python -m bench` (started from the same working directory). It finds that run's
embedded PostgreSQL, turns on `log_statement = 'all'` with the application name and backend pid in
the prefix (ALTER SYSTEM + pg_reload_conf(); the cluster is the bench's own and is thrown away),
follows its log and counts transactions per `application_name`: a BEGIN…COMMIT/ROLLBACK is one, a
statement outside one is one. Every `--every` seconds it prints the counts since the last line and
how many DELIVERED events were stored meanwhile, so transactions per delivered message can be read
off the steady part of the single-send case. Logging every statement costs PostgreSQL CPU: use a
run with this tool for the split only, never for CPU figures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import time
from collections import Counter
from pathlib import Path

import asyncpg

_LINE = re.compile(r"^(?P<app>[^|]*)\|(?P<pid>\d+)\|LOG:\s+(?:statement|execute [^:]*): (?P<sql>.*)$")
DELIVERED = 2  # postwire.v1.EVENT_TYPE_DELIVERED


def _bench_postgres(cwd: Path) -> tuple[int, Path] | None:
    """(port, log path) of the embedded PostgreSQL of a bench started in `cwd`."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path("/proc", pid, "cmdline").read_bytes().split(b"\0")
            if b"bench" not in b" ".join(cmd) or Path("/proc", pid, "cwd").resolve() != cwd:
                continue
            for fd in Path("/proc", pid, "fd").iterdir():
                target = os.readlink(fd)
                if target.endswith("postgres.log"):
                    text = Path(target).read_text(errors="replace")
                    port = re.search(r'listening on IPv4 address "[^"]+", port (\d+)', text)
                    if port:
                        return int(port.group(1)), Path(target)
        except OSError:
            continue
    return None


async def _delivered(conn: asyncpg.Connection) -> int:
    try:
        return int(await conn.fetchval("SELECT count(*) FROM events WHERE type = $1", DELIVERED))
    except asyncpg.UndefinedTableError:
        return 0  # migrations not run yet


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--every", type=float, default=5.0)
    args = parser.parse_args()
    cwd = Path.cwd().resolve()
    found = None
    while found is None:
        found = _bench_postgres(cwd)
        await asyncio.sleep(0.5)
    port, log = found
    admin = await asyncpg.connect(host="127.0.0.1", port=port, user="postgres", database="postgres")
    await admin.execute("ALTER SYSTEM SET log_statement = 'all'")
    await admin.execute("ALTER SYSTEM SET log_line_prefix = '%a|%p|'")
    await admin.execute("SELECT pg_reload_conf()")
    await admin.close()
    db = await asyncpg.connect(host="127.0.0.1", port=port, user="postgres", database="postwire")
    in_tx: dict[str, bool] = {}
    counts: Counter[str] = Counter()
    with log.open(errors="replace") as f:
        f.seek(0, os.SEEK_END)
        last = time.monotonic()
        delivered = await _delivered(db)
        while True:
            line = f.readline()
            if not line:
                now = time.monotonic()
                if now - last >= args.every:
                    try:
                        total = await _delivered(db)
                    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                        break  # the bench stopped its PostgreSQL
                    split = " ".join(
                        f"{k}={v}" for k, v in sorted(counts.items()) if k.startswith("postwire")
                    )
                    print(f"{time.strftime('%H:%M:%S')} delivered+{total - delivered} {split}", flush=True)
                    delivered, last = total, now
                    counts.clear()
                await asyncio.sleep(0.2)
                continue
            m = _LINE.match(line.rstrip("\n"))
            if not m:
                continue
            key = m["pid"]
            sql = m["sql"].strip().rstrip(";").upper()
            if sql.startswith("BEGIN"):
                in_tx[key] = True
            elif sql.startswith(("COMMIT", "ROLLBACK")):
                in_tx[key] = False
                counts[m["app"]] += 1
            elif not in_tx.get(key):
                counts[m["app"]] += 1


if __name__ == "__main__":
    asyncio.run(main())
