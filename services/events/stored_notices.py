"""Wake-ups for live streams: the recorder announces on core NATS that it stored a tenant's event,
after the commit, and each open stream re-reads PostgreSQL past its position.

The notice carries nothing but the tenant: PostgreSQL stays the one source of what a stream sends,
so a lost notice (core NATS is at most once) only delays a stream until its next poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from libs.errors import Unavailable

__all__ = ["StoredNotices", "Wake", "stored_subject"]

_log = logging.getLogger(__name__)
# Not under postwire.events.> or postwire.work.>: no JetStream stream keeps these.
STORED_PREFIX = "postwire.stored"
_FLUSH_SECONDS = 2


def stored_subject(tenant_id: str) -> str:
    return f"{STORED_PREFIX}.{tenant_id}"


class Wake:
    """Set by a notice; a stream clears it before each read of PostgreSQL, so a notice that lands
    during the read is not lost."""

    def __init__(self, poll_seconds: float) -> None:
        self._event = asyncio.Event()
        self._poll = poll_seconds

    async def notice(self, _msg: Msg) -> None:
        self._event.set()

    def clear(self) -> None:
        self._event.clear()

    async def wait(self) -> None:
        """Until a notice or the poll interval, whichever is first."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), self._poll)


class StoredNotices:
    def __init__(self, nc: NATS, *, poll_seconds: float) -> None:
        self._nc = nc
        self._poll = poll_seconds

    async def announce(self, tenant_id: str) -> None:
        # Best effort: the event is stored; a stream that misses this sees it at its next poll.
        try:
            await self._nc.publish(stored_subject(tenant_id), b"")
        except (nats.errors.Error, OSError) as exc:
            _log.debug("stored notice for %s not sent: %s", tenant_id, exc)

    @contextlib.asynccontextmanager
    async def watch(self, tenant_id: str) -> AsyncIterator[Wake]:
        """A wake-up for the tenant's stored events, subscribed (and confirmed by the server)
        before the caller's first read, so nothing stored after that read goes unnoticed.
        UNAVAILABLE while the bus is down: a stream that only polled would look alive but lag."""
        if not self._nc.is_connected:
            raise Unavailable("message bus unavailable", retry_after=5.0)
        wake = Wake(self._poll)
        sub = await self._nc.subscribe(stored_subject(tenant_id), cb=wake.notice)
        try:
            await self._nc.flush(timeout=_FLUSH_SECONDS)
            yield wake
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
