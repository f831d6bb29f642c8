"""The handlers of one fetched batch share one statement, and each still gets its own answer."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from libs.coalesce import Coalescer
from libs.errors import Unavailable


class FakeTable:
    """A batch statement that answers key * 10, refuses key 99 (a row it cannot use), and
    records every statement it ran."""

    def __init__(self, *, down: bool = False) -> None:
        self.statements: list[list[int]] = []
        self.down = down

    async def run(self, keys: Sequence[int]) -> list[int]:
        self.statements.append(list(keys))
        await asyncio.sleep(0)  # a round trip
        if self.down:
            raise Unavailable("database unavailable")
        if 99 in keys:
            raise ValueError("row 99 is unusable")
        return [key * 10 for key in keys]


def _outage(exc: Exception) -> bool:
    return isinstance(exc, Unavailable)


async def test_keys_asked_for_together_share_one_statement() -> None:
    table = FakeTable()
    loader: Coalescer[int, int] = Coalescer(table.run, max_batch=64, outage=_outage)
    answers = await asyncio.gather(*(loader.load(k) for k in range(20)))
    assert answers == [k * 10 for k in range(20)]
    assert table.statements == [list(range(20))]


async def test_a_batch_never_exceeds_max_batch() -> None:
    table = FakeTable()
    loader: Coalescer[int, int] = Coalescer(table.run, max_batch=8, outage=_outage)
    answers = await asyncio.gather(*(loader.load(k) for k in range(20)))
    assert answers == [k * 10 for k in range(20)]
    assert [len(s) for s in table.statements] == [8, 8, 4]


async def test_keys_arriving_while_a_statement_runs_form_the_next_batch() -> None:
    table = FakeTable()
    loader: Coalescer[int, int] = Coalescer(table.run, max_batch=64, outage=_outage)
    first = asyncio.gather(*(loader.load(k) for k in range(3)))
    await asyncio.sleep(0)
    await asyncio.sleep(0)  # the first statement is out
    second = asyncio.gather(*(loader.load(k) for k in range(3, 6)))
    assert await first == [0, 10, 20]
    assert await second == [30, 40, 50]
    assert table.statements == [[0, 1, 2], [3, 4, 5]]


async def test_with_a_linger_keys_arriving_apart_share_one_statement() -> None:
    table = FakeTable()
    loader: Coalescer[int, int] = Coalescer(table.run, max_batch=64, outage=_outage, linger=0.05)
    first = asyncio.ensure_future(loader.load(1))
    await asyncio.sleep(0.01)  # several turns of the loop later, well inside the linger
    second = asyncio.ensure_future(loader.load(2))
    assert await asyncio.gather(first, second) == [10, 20]
    assert table.statements == [[1, 2]]


async def test_one_bad_key_does_not_fail_its_batch_mates() -> None:
    table = FakeTable()
    loader: Coalescer[int, int] = Coalescer(table.run, outage=_outage)
    results = await asyncio.gather(*(loader.load(k) for k in (98, 99, 100)), return_exceptions=True)
    assert results[0] == 980 and results[2] == 1000
    assert isinstance(results[1], ValueError)
    # The batch, then each key alone.
    assert table.statements == [[98, 99, 100], [98], [99], [100]]


async def test_an_outage_fails_the_whole_batch_without_retrying_key_by_key() -> None:
    table = FakeTable(down=True)
    loader: Coalescer[int, int] = Coalescer(table.run, outage=_outage)
    results = await asyncio.gather(*(loader.load(k) for k in range(4)), return_exceptions=True)
    assert all(isinstance(r, Unavailable) for r in results)
    assert table.statements == [[0, 1, 2, 3]]


async def test_a_cancelled_caller_leaves_its_batch_mates_their_answers() -> None:
    table = FakeTable()
    loader: Coalescer[int, int] = Coalescer(table.run, outage=_outage)
    tasks = [asyncio.create_task(loader.load(k)) for k in range(3)]
    await asyncio.sleep(0)
    tasks[1].cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert results[0] == 0 and results[2] == 20
    assert isinstance(results[1], asyncio.CancelledError)
    # Its key still went out (the events recorder relies on it: a handler cancelled at shutdown
    # leaves its event to be stored with the others, unacked, and the redelivery finds it stored).
    assert table.statements == [[0, 1, 2]]


async def test_an_answer_count_that_does_not_match_is_an_error_not_a_misattribution() -> None:
    async def short(keys: Sequence[int]) -> list[int]:
        return []

    loader: Coalescer[int, int] = Coalescer(short, outage=_outage)
    with pytest.raises(RuntimeError):
        await asyncio.gather(loader.load(1), loader.load(2))


async def test_a_stalled_statement_holds_back_callers_past_the_bound() -> None:
    gate = asyncio.Event()
    peak = 0

    async def stalled(keys: Sequence[int]) -> list[int]:
        await gate.wait()
        return list(keys)

    loader: Coalescer[int, int] = Coalescer(stalled, max_batch=2, max_pending=4)

    async def watch() -> None:
        nonlocal peak
        while not gate.is_set():
            peak = max(peak, loader.pending)
            await asyncio.sleep(0)

    watcher = asyncio.create_task(watch())
    callers = [asyncio.create_task(loader.load(k)) for k in range(20)]
    for _ in range(20):
        await asyncio.sleep(0)
    # The batch in flight (2) plus the queue (2) hold the bound; 16 callers wait outside.
    assert loader.pending + 2 <= 4
    assert sum(not c.done() for c in callers) == 20
    gate.set()
    assert await asyncio.gather(*callers) == list(range(20))
    await watcher
    assert peak <= 4
