"""Many callers, one round trip: per-message handlers ask for one key each, and the keys asked for
together (a fetched batch's handlers all start in the same loop turn) go to the database as one
multi-row statement.

The handlers stay per message, so a message's failure, nak, term and ack stay its own; only the
I/O is shared. A batch whose statement fails for a reason that is not "the dependency is down" is
run again one key at a time, so one bad row cannot sink its batch-mates; an outage fails them all,
which each caller's retry bookkeeping treats as the outage it is.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["Coalescer"]

K = TypeVar("K")
V = TypeVar("V")

# Answers for `keys`, in the same order and as many; a key may appear more than once.
BatchRun = Callable[[Sequence[K]], Awaitable[Sequence[V]]]


class Coalescer(Generic[K, V]):
    """`await load(key)` returns the answer `run` gave for `key` in the batch it went out with.

    At most one batch is in flight at a time: keys that arrive meanwhile form the next batch, so
    a busy stage sends bigger batches rather than more statements.

    At most `max_pending` keys are held (queued or in the batch in flight); a caller past that
    waits for room before its key is queued, so a stalled database holds back its producers
    instead of growing the queue.
    """

    def __init__(
        self,
        run: BatchRun[K, V],
        *,
        max_batch: int = 64,
        max_pending: int | None = None,
        outage: Callable[[Exception], bool] = lambda exc: False,
        linger: float = 0.0,
    ) -> None:
        self._run = run
        self._max_batch = max_batch
        # Seconds a batch short of max_batch waits for more keys before it goes out (0: one turn
        # of the loop), for callers that can wait a little and are cheaper in fewer statements.
        self._linger = linger
        # Default: the batch in flight and three more; the consumers that call this fetch fewer.
        self._room = asyncio.Semaphore(max_pending or 4 * max_batch)
        self._outage = outage
        self._queue: list[tuple[K, asyncio.Future[V]]] = []
        self._drainer: asyncio.Task[None] | None = None

    @property
    def pending(self) -> int:
        """Keys queued and not yet answered (for tests and metrics)."""
        return len(self._queue)

    async def load(self, key: K) -> V:
        await self._room.acquire()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[V] = loop.create_future()
        # The room is given back when the key is answered (or its caller gives up).
        future.add_done_callback(lambda _: self._room.release())
        self._queue.append((key, future))
        if self._drainer is None:
            self._drainer = loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            # One turn of the loop: the rest of a fetched batch reaches load() before the first
            # statement goes out.
            await asyncio.sleep(0)
            while self._queue:
                if self._linger and len(self._queue) < self._max_batch:
                    await asyncio.sleep(self._linger)
                batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]
                await self._settle(batch)
        finally:
            self._drainer = None

    async def _settle(self, batch: list[tuple[K, asyncio.Future[V]]]) -> None:
        try:
            answers = await self._run([key for key, _ in batch])
            if len(answers) != len(batch):
                raise RuntimeError(f"batch answered {len(answers)} of {len(batch)} keys")
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        except Exception as exc:
            if len(batch) > 1 and not self._outage(exc):
                for item in batch:
                    await self._settle([item])
                return
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), answer in zip(batch, answers, strict=True):
            if not future.done():  # its caller was cancelled; the answer is dropped
                future.set_result(answer)

    async def close(self) -> None:
        """Stop the drainer (after a stop, nothing should be waiting on it)."""
        if self._drainer is not None:
            self._drainer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._drainer
