"""A periodic task that keeps running through failures: the loop behind every PostgreSQL sweeper."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from libs import metrics

__all__ = ["Periodic"]

_log = logging.getLogger(__name__)


class Periodic:
    def __init__(self, name: str, interval: float, tick: Callable[[], Awaitable[int]]) -> None:
        self._name = name
        self._interval = interval
        self._tick = tick
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self._name)

    async def _run(self) -> None:
        while True:
            try:
                count = await self._tick()
                if count:
                    metrics.sweeper_republished.add(count, {"postwire.sweeper": self._name})
                    _log.info("%s: re-published %d", self._name, count)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # A sweep that fails (database or NATS away) simply runs again next interval.
                _log.warning("%s failed: %s", self._name, type(exc).__name__)
            await asyncio.sleep(self._interval)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
