"""Readiness and liveness, as every service's gRPC health service reports them.

Readiness (health service name `readiness`, and every served service's own name) answers "send me
traffic": SERVING only while the schema is at least the version this build ships and the
service's own PostgreSQL pool and NATS connection work. A probe task re-checks every
READINESS_INTERVAL_SECONDS, so a lost dependency shows as NOT_SERVING within one interval and a
recovered one as SERVING again, without a restart.

Liveness (the empty service name) answers "restart me": only a stalled event loop makes it
NOT_SERVING, never a dependency, so a database blip takes pods out of the load balancer but does
not restart the fleet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Protocol

import asyncpg

__all__ = [
    "LIVENESS",
    "READINESS",
    "Check",
    "Heartbeat",
    "ReadinessProbe",
    "database_check",
    "nats_check",
    "needed_schema_version",
    "schema_version",
]

READINESS = "readiness"
LIVENESS = ""
READINESS_INTERVAL_SECONDS = 2.0
# Each check's bound: a dependency slower than this is as good as away for a new request.
CHECK_TIMEOUT_SECONDS = 1.5
# Liveness fails when the heartbeat task has not run for this long: far beyond any healthy pause
# (a 25 MB message's parse, a GC), short of the manifests' liveness failure window.
STALL_SECONDS = 10.0
_HEARTBEAT_SECONDS = 1.0

_log = logging.getLogger("postwire")
_MIGRATIONS = Path(__file__).with_name("migrations")
_NUMBER = re.compile(r"^(\d+)_")

# Resolves to None when ready, else the reason (for the log line at each change).
Check = Callable[[], Awaitable[str | None]]


def schema_version(names: Iterable[str]) -> int:
    """The highest migration number among migration file names (0 for none)."""
    numbers = [int(m.group(1)) for m in map(_NUMBER.match, names) if m]
    return max(numbers, default=0)


def needed_schema_version(directory: Path = _MIGRATIONS) -> int:
    """The highest migration this build ships: the schema it needs."""
    return schema_version(p.name for p in directory.glob("*.sql"))


def database_check(pool: asyncpg.Pool, *, needed: int | None = None) -> Check:
    """One query through the service's own pool: it proves a connection works and reads the
    schema version in the same round trip."""
    want = needed_schema_version() if needed is None else needed
    query = "SELECT version FROM schema_migrations"

    async def versions() -> list[asyncpg.Record]:
        try:
            return await pool.fetch(query, timeout=CHECK_TIMEOUT_SECONDS)
        except (asyncpg.exceptions.ConnectionDoesNotExistError, asyncpg.exceptions.InterfaceError):
            # An idle connection the server ended (a restart, a terminated backend): the pool
            # replaces it on the next acquire, as it does for any caller; only that one counts.
            return await pool.fetch(query, timeout=CHECK_TIMEOUT_SECONDS)

    async def check() -> str | None:
        try:
            rows = await asyncio.wait_for(versions(), CHECK_TIMEOUT_SECONDS)
        except TimeoutError:
            return "database: no answer in time"
        except asyncpg.exceptions.UndefinedTableError:
            return f"database: schema at version 0 (never migrated), this build needs {want}"
        except Exception as exc:
            return f"database: {type(exc).__name__}"
        have = schema_version(str(row["version"]) for row in rows)
        if have < want:
            return f"database: schema at version {have}, this build needs {want}"
        return None

    return check


class _Connection(Protocol):
    @property
    def is_connected(self) -> bool: ...


def nats_check(nc: _Connection) -> Check:
    async def check() -> str | None:
        return None if nc.is_connected else "nats: not connected"

    return check


async def _run_checks(checks: Sequence[Check]) -> list[str]:
    results = await asyncio.gather(*(check() for check in checks))
    return [reason for reason in results if reason is not None]


class ReadinessProbe:
    """Runs the checks now and every interval, and hands the verdict to `publish`."""

    def __init__(
        self,
        checks: Sequence[Check],
        publish: Callable[[bool], Awaitable[None]],
        *,
        interval: float = READINESS_INTERVAL_SECONDS,
    ) -> None:
        self._checks = list(checks)
        self._publish = publish
        self._interval = interval
        self._ready: bool | None = None
        self._task: asyncio.Task[None] | None = None

    async def check_once(self) -> bool:
        reasons = await _run_checks(self._checks)
        ready = not reasons
        if ready != self._ready:
            if ready:
                _log.info("ready")
            else:
                _log.warning("not ready: %s", "; ".join(reasons))
            self._ready = ready
        await self._publish(ready)
        return ready

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="readiness")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.check_once()
            except Exception:
                _log.exception("readiness check failed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class Heartbeat:
    """A task that notes the time every second; if it has not run for `stall` seconds, the event
    loop is stuck (or starved) and liveness says so."""

    def __init__(self, *, stall: float = STALL_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self._stall = stall
        self._clock = clock
        self._last = clock()
        self._task: asyncio.Task[None] | None = None

    def alive(self) -> bool:
        return self._clock() - self._last <= self._stall

    def beat(self) -> None:
        self._last = self._clock()

    def start(self) -> None:
        self.beat()
        self._task = asyncio.create_task(self._run(), name="heartbeat")

    async def _run(self) -> None:
        while True:
            self.beat()
            await asyncio.sleep(_HEARTBEAT_SECONDS)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
