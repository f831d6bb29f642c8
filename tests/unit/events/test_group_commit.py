"""The events recorder's group commit: the handlers of one fetch share one transaction, each
returns only after it commits, and one bad event does not fail its neighbours."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from services.events.group_commit import GroupCommit


class FakeStore:
    """Records each flush (a transaction); items named 'bad' make a flush fail."""

    def __init__(self) -> None:
        self.flushes: list[list[str]] = []
        self.committed: set[str] = set()
        self.stored: set[str] = set()

    async def store_many(self, items: Sequence[str]) -> list[bool]:
        self.flushes.append(list(items))
        await asyncio.sleep(0)  # the round trip
        if "bad" in items:
            raise ValueError("undecodable")
        answers = []
        for item in items:
            answers.append(item not in self.stored)
            self.stored.add(item)
        self.committed.update(items)
        return answers


async def test_one_fetch_is_one_transaction_with_answers_in_order() -> None:
    store = FakeStore()
    batches = GroupCommit(store.store_many)
    answers = await asyncio.gather(*(batches.submit(f"e{n}") for n in range(64)))
    assert store.flushes == [[f"e{n}" for n in range(64)]]
    assert answers == [True] * 64


async def test_a_handler_returns_only_after_its_batch_committed() -> None:
    store = FakeStore()
    batches = GroupCommit(store.store_many)
    seen_committed: list[bool] = []

    async def handle(item: str) -> None:
        await batches.submit(item)
        seen_committed.append(item in store.committed)  # where the bus would ack

    await asyncio.gather(*(handle(f"e{n}") for n in range(10)))
    assert seen_committed == [True] * 10


async def test_duplicates_are_stored_once() -> None:
    store = FakeStore()
    batches = GroupCommit(store.store_many)
    first = await asyncio.gather(*(batches.submit(i) for i in ("a", "b")))
    again = await asyncio.gather(*(batches.submit(i) for i in ("a", "b", "c")))
    assert (first, again) == ([True, True], [False, False, True])


async def test_a_bad_event_fails_alone() -> None:
    store = FakeStore()
    batches = GroupCommit(store.store_many)
    results = await asyncio.gather(*(batches.submit(i) for i in ("a", "bad", "c")), return_exceptions=True)
    assert results[0] is True and results[2] is True
    assert isinstance(results[1], ValueError)
    # The batch, then each alone.
    assert store.flushes == [["a", "bad", "c"], ["a"], ["bad"], ["c"]]


async def test_batches_are_bounded() -> None:
    store = FakeStore()
    batches = GroupCommit(store.store_many, max_batch=4)
    await asyncio.gather(*(batches.submit(f"e{n}") for n in range(10)))
    assert [len(f) for f in store.flushes] == [4, 4, 2]


async def test_a_cancelled_handler_does_not_cancel_the_batch() -> None:
    store = FakeStore()
    batches = GroupCommit(store.store_many)
    first = asyncio.ensure_future(batches.submit("a"))
    second = asyncio.ensure_future(batches.submit("b"))
    await asyncio.sleep(0)
    first.cancel()
    assert await second is True
    with pytest.raises(asyncio.CancelledError):
        await first
    assert store.committed == {"a", "b"}


async def test_a_stalled_flush_holds_back_submitters_past_the_bound() -> None:
    gate = asyncio.Event()
    held: list[int] = []

    async def stalled(items: Sequence[str]) -> list[bool]:
        held.append(len(items))
        await gate.wait()
        return [True] * len(items)

    batches: GroupCommit[str, bool] = GroupCommit(stalled, max_batch=2, max_pending=3)
    submitters = [asyncio.create_task(batches.submit(str(n))) for n in range(10)]
    for _ in range(20):
        await asyncio.sleep(0)
    # Two in the flush, one queued: the bound; the other seven wait to queue.
    assert held == [2]
    assert batches.pending == 1
    gate.set()
    assert await asyncio.gather(*submitters) == [True] * 10
    assert max(held) <= 2 and sum(held) == 10
