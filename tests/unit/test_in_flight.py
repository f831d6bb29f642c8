"""libs.grpcx.in_flight: the admission rules load shedding rests on."""

from __future__ import annotations

import asyncio

import pytest

from libs.grpcx.in_flight import InFlightLimit


async def test_admits_up_to_the_limit_and_refuses_the_next_at_once_without_a_wait() -> None:
    limit = InFlightLimit(2, max_wait=0.0)
    assert await limit.enter()
    assert await limit.enter()
    assert not await limit.enter()
    assert limit.in_flight == 2
    limit.leave()
    assert await limit.enter()


async def test_a_waiter_gets_the_slot_a_holder_frees() -> None:
    limit = InFlightLimit(1, max_wait=10.0)
    assert await limit.enter()
    waiter = asyncio.create_task(limit.enter())
    await asyncio.sleep(0)
    assert limit.waiting == 1
    limit.leave()
    assert await waiter
    assert limit.in_flight == 1 and limit.waiting == 0


async def test_a_waiter_is_refused_when_the_wait_bound_passes() -> None:
    limit = InFlightLimit(1, max_wait=0.01)
    assert await limit.enter()
    assert not await limit.enter()
    assert limit.waiting == 0 and limit.in_flight == 1


async def test_the_waiting_line_is_bounded() -> None:
    limit = InFlightLimit(1, max_wait=10.0, max_waiting=2)
    assert await limit.enter()
    waiters = [asyncio.create_task(limit.enter()) for _ in range(2)]
    await asyncio.sleep(0)
    # A third caller is refused at once: the line never grows past its bound.
    assert not await limit.enter()
    assert limit.waiting == 2
    limit.leave()
    limit.leave()
    assert await asyncio.gather(*waiters) == [True, True]


async def test_a_newcomer_does_not_overtake_a_waiter() -> None:
    limit = InFlightLimit(1, max_wait=10.0)
    assert await limit.enter()
    first = asyncio.create_task(limit.enter())
    await asyncio.sleep(0)
    limit.leave()  # handed to `first`, not left free for whoever comes next
    newcomer = asyncio.create_task(limit.enter())
    await asyncio.sleep(0)
    assert not newcomer.done()
    assert await first
    assert limit.in_flight == 1
    limit.leave()
    assert await newcomer


async def test_a_cancelled_waiter_that_was_handed_a_slot_passes_it_on() -> None:
    limit = InFlightLimit(1, max_wait=10.0)
    assert await limit.enter()
    cancelled = asyncio.create_task(limit.enter())
    await asyncio.sleep(0)
    limit.leave()
    cancelled.cancel()  # the slot was handed over, but the caller went away before resuming
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert limit.in_flight == 0
    assert await limit.enter()


async def test_many_callers_never_exceed_the_limit() -> None:
    limit = InFlightLimit(3, max_wait=1.0, max_waiting=100)
    peak = 0

    async def call() -> bool:
        nonlocal peak
        if not await limit.enter():
            return False
        peak = max(peak, limit.in_flight)
        await asyncio.sleep(0.001)
        limit.leave()
        return True

    results = await asyncio.gather(*(call() for _ in range(50)))
    assert all(results)
    assert peak == 3
    assert limit.in_flight == 0


def _with_completions_every(monkeypatch: pytest.MonkeyPatch, limit: InFlightLimit, gap: float) -> None:
    """Feed the limit twenty completions `gap` seconds apart on a stand-in clock."""
    now = [1000.0]
    monkeypatch.setattr("libs.grpcx.in_flight.monotonic", lambda: now[0])
    monkeypatch.setattr("libs.grpcx.in_flight._MAX_GAP_SECONDS", 1000.0)
    for _ in range(20):
        limit._held += 1  # a holder that was admitted earlier
        limit.leave()
        now[0] += gap


async def test_callers_wait_only_for_turns_the_completion_rate_can_give_within_the_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    slow = InFlightLimit(1, max_wait=10.0, max_waiting=8)
    _with_completions_every(monkeypatch, slow, 100.0)  # far slower than the wait: one in line at most
    assert await slow.enter()
    first = asyncio.create_task(slow.enter())
    await asyncio.sleep(0)
    assert slow.waiting == 1 and slow.full()
    assert not await slow.enter()  # refused at once, not after the wait
    slow.leave()
    assert await first

    fast = InFlightLimit(1, max_wait=10.0, max_waiting=8)
    _with_completions_every(monkeypatch, fast, 0.5)  # twenty turns per wait: the bound is max_waiting
    assert await fast.enter()
    waiters = [asyncio.create_task(fast.enter()) for _ in range(8)]
    await asyncio.sleep(0)
    assert fast.waiting == 8 and fast.full()
    for _ in range(8):
        fast.leave()
    assert await asyncio.gather(*waiters) == [True] * 8
