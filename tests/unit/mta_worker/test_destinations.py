"""A destination (recipient domain) holds at most its share of a worker's SMTP slots."""

from __future__ import annotations

import asyncio
import time

from services.mta_worker.destinations import DestinationSlots, destination


def test_the_destination_is_the_domain_case_folded() -> None:
    assert destination("Ada+x@Mail.Example.COM") == "mail.example.com"


def test_a_full_destination_refuses_while_others_still_get_slots() -> None:
    slots = DestinationSlots(2)
    assert slots.take(["slow.example"]) and slots.take(["slow.example"])
    assert not slots.take(["slow.example"])
    assert slots.take(["fast.example"])
    slots.give_back(["slow.example"], took=1.0)
    assert slots.take(["slow.example"])


def test_a_message_to_several_destinations_takes_one_slot_at_each_or_none() -> None:
    slots = DestinationSlots(1)
    assert slots.take(["a.example"])
    assert not slots.take(["a.example", "b.example"])
    assert slots.held("b.example") == 0
    assert slots.take(["b.example", "b.example", "c.example"])
    assert (slots.held("b.example"), slots.held("c.example")) == (1, 1)
    slots.give_back(["b.example", "c.example"], took=1.0)
    assert (slots.held("b.example"), slots.held("c.example")) == (0, 0)


def test_a_busy_fast_destination_is_tried_again_soon_and_a_tarpit_later() -> None:
    slots = DestinationSlots(1, min_wait=0.5, max_wait=60.0)
    assert slots.wait_hint(["new.example"]) == 0.5
    for _ in range(5):
        slots.take(["fast.example"])
        slots.give_back(["fast.example"], took=0.05)
        slots.take(["tarpit.example"])
        slots.give_back(["tarpit.example"], took=10.0)
    assert slots.wait_hint(["fast.example"]) == 0.5
    assert slots.wait_hint(["tarpit.example"]) == 10.0
    assert slots.wait_hint(["fast.example", "tarpit.example"]) == 10.0
    slots.take(["hung.example"])
    slots.give_back(["hung.example"], took=600.0)
    assert slots.wait_hint(["hung.example"]) == 60.0


def _learn(slots: DestinationSlots, name: str, took: float) -> None:
    slots.take([name])
    slots.give_back([name], took=took)


async def test_at_a_full_fast_destination_a_message_waits_for_the_next_free_slot() -> None:
    slots = DestinationSlots(1)
    _learn(slots, "fast.example", 0.05)
    assert slots.take(["fast.example"])
    waiting = asyncio.create_task(slots.take_soon(["fast.example"]))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    slots.give_back(["fast.example"], took=0.05)
    assert await asyncio.wait_for(waiting, 1.0)
    assert slots.held("fast.example") == 1


async def test_a_full_destination_that_is_slow_or_unknown_is_not_waited_for() -> None:
    slots = DestinationSlots(1)
    _learn(slots, "tarpit.example", 10.0)
    for name in ("tarpit.example", "new.example"):
        assert slots.take([name])
        started = time.monotonic()
        assert not await slots.take_soon([name])
        # Not waited for: a wait would last min_wait (0.5 s); the slack is for a busy machine.
        assert time.monotonic() - started < 0.25


async def test_a_wait_ends_after_a_few_transaction_times_without_a_slot() -> None:
    slots = DestinationSlots(1, min_wait=0.01)
    _learn(slots, "fast.example", 0.02)
    assert slots.take(["fast.example"])
    started = time.monotonic()
    assert not await slots.take_soon(["fast.example"])
    assert 0.05 <= time.monotonic() - started < 1.0
    assert slots.held("fast.example") == 1


async def test_a_waiter_gets_a_slot_that_returns_later_than_a_few_lone_transactions() -> None:
    # At a burst's start the slots come back together, when their outcomes are committed: later
    # than four of the lone warm-up's transaction times, sooner than a postponed message's retry.
    slots = DestinationSlots(1, min_wait=0.5)
    _learn(slots, "fast.example", 0.01)
    assert slots.take(["fast.example"])
    waiting = asyncio.create_task(slots.take_soon(["fast.example"]))
    await asyncio.sleep(0.15)
    assert not waiting.done()
    slots.give_back(["fast.example"], took=0.15)
    assert await asyncio.wait_for(waiting, 1.0)


async def test_no_more_messages_wait_at_a_destination_than_it_has_slots() -> None:
    slots = DestinationSlots(1)
    _learn(slots, "fast.example", 0.2)
    assert slots.take(["fast.example"])
    first = asyncio.create_task(slots.take_soon(["fast.example"]))
    await asyncio.sleep(0.01)
    assert slots.queue_wait(["fast.example"]) == 0.0
    assert not await slots.take_soon(["fast.example"])
    slots.give_back(["fast.example"], took=0.2)
    assert await first


async def test_a_wait_never_outlasts_the_callers_bound() -> None:
    # The worker bounds it by its heartbeat period, so the claim's lease cannot run out meanwhile.
    slots = DestinationSlots(1)
    _learn(slots, "fast.example", 1.0)
    assert slots.take(["fast.example"])
    started = time.monotonic()
    assert not await slots.take_soon(["fast.example"], longest=0.05)
    assert time.monotonic() - started < 0.5


async def test_a_fast_destination_that_defers_mail_is_not_waited_for() -> None:
    # A destination answering 4xx quickly is pushing back: its mail goes the retry way, and the
    # worker's slots stay free for other destinations.
    slots = DestinationSlots(1)
    for _ in range(3):
        slots.take(["throttling.example"])
        slots.give_back(["throttling.example"], took=0.01, deferred=True)
    assert slots.take(["throttling.example"])
    assert slots.queue_wait(["throttling.example"]) == 0.0
    assert not await slots.take_soon(["throttling.example"])


async def test_shutdown_ends_every_wait_at_once() -> None:
    slots = DestinationSlots(1)
    _learn(slots, "fast.example", 1.0)
    assert slots.take(["fast.example"])
    waiting = asyncio.create_task(slots.take_soon(["fast.example"]))
    await asyncio.sleep(0.01)
    slots.stop_waiting()
    assert not await asyncio.wait_for(waiting, 0.5)
    assert not await slots.take_soon(["fast.example"])
