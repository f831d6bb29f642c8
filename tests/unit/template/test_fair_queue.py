"""Who renders next: arrival order, except that no tenant holds more than its share."""

from __future__ import annotations

from services.template.fair_queue import FairQueue, tenant_share


def test_a_tenant_holds_at_most_half_the_workers_and_always_one() -> None:
    assert [tenant_share(n) for n in (1, 2, 3, 4, 8)] == [1, 1, 1, 2, 4]


def test_waiters_are_served_in_arrival_order() -> None:
    queue: FairQueue[str] = FairQueue(per_tenant=2)
    for ticket in ("a1", "b1", "a2"):
        queue.wait(ticket[0], ticket)
    assert [queue.next(), queue.next(), queue.next(), queue.next()] == [
        ("a", "a1"),
        ("b", "b1"),
        ("a", "a2"),
        None,
    ]


def test_a_tenant_at_its_share_is_skipped_not_queued_behind() -> None:
    queue: FairQueue[str] = FairQueue(per_tenant=1)
    queue.wait("a", "a1")
    assert queue.next() == ("a", "a1")
    queue.wait("a", "a2")
    queue.wait("a", "a3")
    queue.wait("b", "b1")
    # a's further renders wait for a's own slot; b goes ahead of them.
    assert queue.next() == ("b", "b1")
    assert queue.next() is None
    queue.finish("a")
    assert queue.next() == ("a", "a2")
    assert queue.next() is None
    assert len(queue) == 1


def test_a_cancelled_waiter_leaves_the_queue_and_holds_nothing() -> None:
    queue: FairQueue[object] = FairQueue(per_tenant=1)
    first, second = object(), object()
    queue.wait("a", first)
    queue.wait("a", second)
    queue.cancel(first)
    assert queue.next() == ("a", second)
    assert queue.running("a") == 1
    queue.finish("a")
    assert queue.running("a") == 0
    assert len(queue) == 0
