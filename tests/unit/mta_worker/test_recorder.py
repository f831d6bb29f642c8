"""The outcome recorder: group commits (at most 64 outcomes, or what arrived within 5 ms), a
caller returns only once its outcomes are committed, and a database outage is waited out."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

import asyncpg
import pytest
from postwire.internal.v1 import bus_pb2

from libs.mail.states import RecipientState
from services.mta_worker.recorder import Recorder
from services.mta_worker.store import Outcome

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def outcome(message_id: str, position: int = 0) -> Outcome:
    return Outcome(message_id, position, RecipientState.DELIVERED, NOW, None, 250, "2.0.0", "OK")


class Store:
    """An in-memory stand-in for WorkerStore.record: keeps each committed batch."""

    def __init__(self, failures: int = 0) -> None:
        self.batches: list[list[Outcome]] = []
        self.failures = failures

    async def record(self, outcomes: Sequence[Outcome], events: Sequence[bus_pb2.EventEnvelope], /) -> None:
        if self.failures:
            self.failures -= 1
            raise asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed")
        self.batches.append(list(outcomes))


async def no_publish(events: Sequence[bus_pb2.EventEnvelope]) -> None:
    return None


async def test_outcomes_arriving_together_are_committed_in_one_batch() -> None:
    store = Store()
    recorder = Recorder(store, no_publish)
    recorder.start()
    await asyncio.gather(*(recorder.record([outcome(f"m{i}")], []) for i in range(10)))
    assert [len(b) for b in store.batches] == [10]
    await recorder.close(timeout=1)


async def test_a_batch_holds_at_most_64_outcomes() -> None:
    store = Store()
    recorder = Recorder(store, no_publish)
    recorder.start()
    await asyncio.gather(*(recorder.record([outcome(f"m{i}")], []) for i in range(150)))
    assert [len(b) for b in store.batches] == [64, 64, 22]
    await recorder.close(timeout=1)


async def test_a_caller_returns_only_after_its_commit_and_an_outage_is_waited_out() -> None:
    store = Store(failures=3)
    recorder = Recorder(store, no_publish, retry_cap=0.01)
    recorder.start()
    record = asyncio.create_task(recorder.record([outcome("m1")], []))
    await asyncio.sleep(0.001)
    assert recorder.pending("m1") and not record.done()
    await record
    assert store.batches == [[outcome("m1")]]
    assert not recorder.pending("m1")
    await recorder.close(timeout=1)


async def test_a_cancelled_caller_does_not_withdraw_its_outcome() -> None:
    store = Store(failures=2)
    recorder = Recorder(store, no_publish, retry_cap=0.01)
    recorder.start()
    record = asyncio.create_task(recorder.record([outcome("m1")], []))
    await asyncio.sleep(0.001)
    record.cancel()
    with pytest.raises(asyncio.CancelledError):
        await record
    await recorder.close(timeout=1)
    assert store.batches == [[outcome("m1")]]


async def test_a_bug_fails_only_its_own_caller() -> None:
    class Picky(Store):
        async def record(
            self, outcomes: Sequence[Outcome], events: Sequence[bus_pb2.EventEnvelope], /
        ) -> None:
            if any(o.message_id == "bad" for o in outcomes):
                raise ValueError("bad row")
            await super().record(outcomes, events)

    store = Picky()
    recorder = Recorder(store, no_publish)
    recorder.start()
    good, bad = await asyncio.gather(
        recorder.record([outcome("good")], []), recorder.record([outcome("bad")], []), return_exceptions=True
    )
    assert good is None and isinstance(bad, ValueError)
    assert store.batches == [[outcome("good")]]
    await recorder.close(timeout=1)


async def test_while_the_database_is_away_the_queue_stops_at_its_bound() -> None:
    store = Store(failures=10**6)  # away until told otherwise
    recorder = Recorder(store, no_publish, max_batch=2, retry_cap=0.005, max_queued=4)
    recorder.start()
    callers = [asyncio.create_task(recorder.record([outcome(f"m{n}")], [])) for n in range(12)]
    await asyncio.sleep(0.05)
    # Two committing, two queued; the other eight callers wait for room rather than queue.
    assert recorder.queued == 2
    assert all(not c.done() for c in callers)
    store.failures = 0
    await asyncio.wait_for(asyncio.gather(*callers), 5)
    assert sorted(o.message_id for b in store.batches for o in b) == sorted(f"m{n}" for n in range(12))
    await recorder.close(timeout=1)
