"""asyncpg pool creation and the migration runner (failures are classified in libs.failures)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg

from libs.errors import Unavailable

__all__ = ["BoundedPool", "NoMigrationsFound", "apply_migrations", "connect_pool"]

_log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).with_name("migrations")
# Any fixed 64-bit number; serialises concurrent migrators (several pods starting at once).
_MIGRATION_LOCK = 0x706F7374_77697265


async def connect_pool(
    url: str,
    *,
    min_size: int = 2,
    max_size: int = 10,
    statement_cache_size: int = 100,
    wait: float = 30.0,
    application_name: str = "postwire",
    acquire_timeout: float = 5.0,
) -> asyncpg.Pool:
    """Open a pool, waiting up to `wait` seconds for the server (pods may start before it).

    `statement_cache_size` is POSTWIRE_DB_STATEMENT_CACHE_SIZE: 0 for PgBouncer in transaction
    mode, where a named prepared statement does not survive the next transaction.

    `acquire_timeout` (POSTWIRE_DB_ACQUIRE_TIMEOUT_SECONDS) bounds the wait for a free connection
    (BoundedPool)."""
    deadline = asyncio.get_running_loop().time() + wait
    while True:
        try:
            pool = await BoundedPool(
                url,
                acquire_timeout=acquire_timeout,
                connection_class=asyncpg.Connection,
                record_class=asyncpg.Record,
                max_queries=50000,
                loop=None,
                min_size=min_size,
                max_size=max_size,
                # Idle connections are replaced, so a PostgreSQL restart heals quietly.
                max_inactive_connection_lifetime=60.0,
                command_timeout=30.0,
                statement_cache_size=statement_cache_size,
                reset=_keep_session,
                # Names the service in pg_stat_activity and in PostgreSQL's logs (%a), unless
                # the operator named it in the URL.
                server_settings=_named(url, application_name),
            )
            assert pool is not None
            return pool
        except (OSError, asyncpg.exceptions.CannotConnectNowError):
            if asyncio.get_running_loop().time() > deadline:
                raise
            _log.warning("database not reachable yet; retrying")
            await asyncio.sleep(0.5)


def _named(url: str, application_name: str) -> dict[str, str]:
    if "application_name" in parse_qs(urlsplit(url).query):
        return {}
    return {"application_name": application_name}


class BoundedPool(asyncpg.Pool):
    """An asyncpg pool whose every acquire (`pool.acquire()`, `pool.fetch()`, ...) waits at most
    `acquire_timeout` for a connection unless the caller gives its own bound.

    asyncpg waits for ever by default: past capacity, calls would queue here without bound and
    each would hold its gRPC slot, memory and deadline. A call that gets no connection in time is
    refused as Unavailable ("database busy", UNAVAILABLE with RetryInfo to the caller; pipeline
    stages count it as an outage, not as the message's fault).
    """

    def __init__(self, *args: Any, acquire_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.acquire_timeout = acquire_timeout

    def acquire(self, *, timeout: float | None = None) -> Any:
        return super().acquire(timeout=self.acquire_timeout if timeout is None else timeout)

    async def _acquire(self, timeout: float | None) -> Any:
        try:
            return await super()._acquire(timeout)  # type: ignore[misc]  # asyncpg's private, unannotated
        except TimeoutError as exc:
            raise Unavailable("database busy: no connection free in time", retry_after=1.0) from exc


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Release a connection without asyncpg's default reset query (advisory unlock all, CLOSE
    ALL, UNLISTEN *, RESET ALL): one more server round trip and commit on every release, about
    half of all commits per message. Pooled connections never change session state (no SET, no
    LISTEN, no session advisory locks, no WITH HOLD cursors): work that needs session state opens
    its own connection (the migrator, mta_worker's queue watch). asyncpg still rolls back a
    transaction left open and drops listeners before calling this."""


class NoMigrationsFound(RuntimeError):
    """The package holds no migration files: an install that lost its package data. Applying
    "nothing" would report success on an empty database, so this stops the rollout instead."""

    def __init__(self, directory: Path) -> None:
        super().__init__(
            f"no migrations found in {directory}: this installation is incomplete "
            "(the wheel must include libs/migrations/*.sql)"
        )
        self.directory = directory


async def apply_migrations(url: str, directory: Path | None = None) -> list[str]:
    """Apply every migration not yet recorded, in file-name order; returns the applied names.

    Holds a session-level advisory lock throughout, so concurrent runners (an initContainer in
    each new pod) apply each file once: the second waits, then finds nothing pending.
    """
    files = sorted((directory or MIGRATIONS).glob("*.sql"))
    if not files:
        raise NoMigrationsFound(directory or MIGRATIONS)
    conn = await asyncpg.connect(url)
    applied: list[str] = []
    try:
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", _MIGRATION_LOCK):
            # Say why an initContainer sits still: another pod's runner is applying migrations.
            _log.warning("another migration runner holds the lock; waiting for it to finish")
            await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version text PRIMARY KEY, apply_time timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for path in files:
            if path.name in done:
                continue
            async with conn.transaction():
                await conn.execute(path.read_text())
                await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", path.name)
            applied.append(path.name)
            _log.info("applied migration %s", path.name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)
        await conn.close()
    return applied
