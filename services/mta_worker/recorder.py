"""One writer for delivery outcomes: each is made durable the moment its reply arrives, and many
are committed together (up to `max_batch` outcomes or `max_wait` seconds), so recording every
reply at once costs one PostgreSQL transaction per batch rather than one per reply.

A commit that fails because PostgreSQL is away is retried until it succeeds: the reply is already
in hand, and dropping it would make the message go out again once the lease runs out. Anything
else fails the callers of that batch (alone, if the batch held several).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections import Counter, deque
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from postwire.internal.v1 import bus_pb2

from libs.failures import dependency_failure
from services.mta_worker.store import Outcome

__all__ = ["OutcomeStore", "Recorder"]

_log = logging.getLogger(__name__)

Events = Sequence[bus_pb2.EventEnvelope]


class OutcomeStore(Protocol):
    async def record(self, outcomes: Sequence[Outcome], events: Events, /) -> None: ...


@dataclass
class _Entry:
    outcomes: Sequence[Outcome]
    events: Events
    # The caller's context (its trace among others), so its events are published as its children.
    context: contextvars.Context = field(default_factory=contextvars.copy_context)
    done: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class Recorder:
    def __init__(
        self,
        store: OutcomeStore,
        publish: Callable[[Events], Coroutine[Any, Any, None]],
        *,
        max_batch: int = 64,
        max_wait: float = 0.005,
        retry_cap: float = 1.0,
        max_queued: int | None = None,
    ) -> None:
        self._store = store
        self._publish = publish
        self._max_batch = max_batch
        self._max_wait = max_wait
        self._retry_cap = retry_cap
        self._queue: deque[_Entry] = deque()
        # Entries held (queued or committing). While PostgreSQL is away commits are retried and
        # nothing leaves; a caller past the bound waits for room, so the delivery handlers stop
        # (and stop fetching) instead of growing this queue. Default: four batches.
        self._room = asyncio.Semaphore(max_queued or 4 * max_batch)
        self._committing: list[_Entry] = []
        self._queued_outcomes = 0
        self._wake = asyncio.Event()
        self._full = asyncio.Event()
        self._pending: Counter[str] = Counter()
        self._task: asyncio.Task[None] | None = None
        self._publishing: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outcome-recorder")

    @property
    def queued(self) -> int:
        return len(self._queue)

    def pending(self, message_id: str) -> bool:
        """True while an outcome of `message_id` is waiting for its commit."""
        return self._pending[message_id] > 0

    async def record(self, outcomes: Sequence[Outcome], events: Events) -> None:
        """Returns once the outcomes are committed. Cancelling the caller does not withdraw them."""
        if not outcomes:
            return
        await self._room.acquire()
        entry = _Entry(outcomes, events)
        entry.done.add_done_callback(lambda _: self._room.release())
        self._queue.append(entry)
        self._queued_outcomes += len(outcomes)
        for o in outcomes:
            self._pending[o.message_id] += 1
        self._wake.set()
        if self._queued_outcomes >= self._max_batch:
            self._full.set()
        await asyncio.shield(entry.done)

    async def close(self, *, timeout: float) -> None:
        """Commit what is queued (within `timeout`), then stop."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        waiting = [e.done for e in (*self._committing, *self._queue) if not e.done.done()]
        if waiting:
            _, unfinished = await asyncio.wait(waiting, timeout=timeout)
            if unfinished:
                _log.warning("%d outcome batch(es) not recorded at shutdown", len(unfinished))
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._publishing:
            await asyncio.wait(self._publishing, timeout=max(0.0, deadline - loop.time()) or 0.5)

    async def _run(self) -> None:
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
            if self._queued_outcomes < self._max_batch:
                self._full.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), self._max_wait)
            self._committing = self._take()
            await self._commit(self._committing)
            self._committing = []

    def _take(self) -> list[_Entry]:
        batch: list[_Entry] = []
        count = 0
        while self._queue and (not batch or count + len(self._queue[0].outcomes) <= self._max_batch):
            entry = self._queue.popleft()
            batch.append(entry)
            count += len(entry.outcomes)
        self._queued_outcomes -= count
        return batch

    async def _commit(self, batch: list[_Entry]) -> None:
        outcomes = [o for e in batch for o in e.outcomes]
        events = [ev for e in batch for ev in e.events]
        delay = 0.05
        while True:
            try:
                await self._store.record(outcomes, events)
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                dependency = dependency_failure(exc)
                if dependency is None:
                    if len(batch) > 1:
                        # One bad outcome must not sink the others committed beside it.
                        for entry in batch:
                            await self._commit([entry])
                        return
                    _log.exception("recording %d outcome(s) failed", len(outcomes))
                    self._settle(batch, exc)
                    return
                _log.warning("recording %d outcome(s): %s; retrying", len(outcomes), dependency.message)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry_cap)
        self._settle(batch, None)
        for entry in batch:
            if entry.events:
                task = asyncio.create_task(self._publish(entry.events), context=entry.context)
                self._publishing.add(task)
                task.add_done_callback(self._publishing.discard)

    def _settle(self, batch: list[_Entry], error: BaseException | None) -> None:
        for entry in batch:
            for o in entry.outcomes:
                self._pending[o.message_id] -= 1
                if self._pending[o.message_id] <= 0:
                    del self._pending[o.message_id]
            if entry.done.done():
                continue
            if error is None:
                entry.done.set_result(None)
            else:
                entry.done.set_exception(error)
