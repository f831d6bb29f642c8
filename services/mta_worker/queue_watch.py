"""The queue gauges (JetStream consumer pending and ack-pending, the oldest overdue work), read by
one replica only.

Every replica would read the same numbers, and a dashboard that sums across pods would then show
N times the lag. So the replica holding a PostgreSQL session advisory lock reports and the others
report nothing; when the holder dies its session ends, the lock is free, and another replica takes
it at its next tick. The lock lives on a connection of its own (a pooled connection is reset, and
its locks released, when it goes back to the pool).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg
from nats.js import JetStreamContext

from libs.bus import EVENTS_STREAM, WORK_STREAM
from libs.mail.states import MessageState, RecipientState, sql_list
from libs.metrics import QueueReadings, queue_readings

__all__ = ["CONSUMERS", "QueueWatch"]

_log = logging.getLogger(__name__)
# Any fixed 64-bit number other than the migration lock's (libs/db.py).
_REPORTER_LOCK = 0x706F7374_6D657472
CONSUMERS = (
    (WORK_STREAM, "router"),
    (WORK_STREAM, "mta_worker"),
    (WORK_STREAM, "mta_worker_retry"),
    (EVENTS_STREAM, "events"),
)
# Due work that has not moved: accepted messages the router has not taken, and recipients due for
# an attempt. Both read their partial indexes (messages_route_due, recipients_due).
_OLDEST_SQL = f"""
SELECT
  COALESCE(EXTRACT(EPOCH FROM now() - (SELECT min(route_due_time) FROM messages
     WHERE state = {sql_list(MessageState.ACCEPTED)} AND route_due_time <= now())), 0)::float8,
  COALESCE(EXTRACT(EPOCH FROM now() - (SELECT min(next_attempt_time) FROM recipients
     WHERE state IN ({sql_list(RecipientState.QUEUED, RecipientState.DEFERRED)})
       AND next_attempt_time <= now())), 0)::float8
"""


class QueueWatch:
    def __init__(
        self, database_url: str, js: JetStreamContext, *, interval: float, readings: QueueReadings = queue_readings
    ) -> None:
        self._url = database_url
        self._js = js
        self._interval = interval
        self._readings = readings
        self._conn: asyncpg.Connection | None = None
        self._leader = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="queue-watch")

    async def _run(self) -> None:
        while True:
            try:
                if await self._is_reporter():
                    await self._read()
                else:
                    self._readings.clear()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Stale numbers are worse than none: an absent series is what the alerts look for.
                self._readings.clear()
                _log.warning("queue gauges not read: %s", type(exc).__name__)
                await self._drop_connection()
            await asyncio.sleep(self._interval)

    async def _is_reporter(self) -> bool:
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(self._url, timeout=10)
            self._leader = False
        if not self._leader:
            self._leader = bool(await self._conn.fetchval("SELECT pg_try_advisory_lock($1)", _REPORTER_LOCK))
        return self._leader

    async def _read(self) -> None:
        assert self._conn is not None
        pending: dict[tuple[str, str], int] = {}
        ack_pending: dict[tuple[str, str], int] = {}
        for stream, durable in CONSUMERS:
            try:
                info = await self._js.consumer_info(stream, durable, timeout=5)
            except Exception as exc:
                # A consumer not made yet (its service has not started) has no series.
                _log.debug("consumer %s/%s: %s", stream, durable, type(exc).__name__)
                continue
            pending[(stream, durable)] = int(info.num_pending or 0)
            ack_pending[(stream, durable)] = int(info.num_ack_pending or 0)
        row = await self._conn.fetchrow(_OLDEST_SQL, timeout=10)
        assert row is not None
        self._readings.update(
            pending=pending, ack_pending=ack_pending, oldest={"route": row[0], "deliver": row[1]}
        )

    async def _drop_connection(self) -> None:
        conn, self._conn, self._leader = self._conn, None, False
        if conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 2)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._readings.clear()
        await self._drop_connection()
