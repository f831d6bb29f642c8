"""Leases waiting for a slot: in order per webhook, bounded, and never started past their time."""

from __future__ import annotations

from services.events.webhook_backlog import Backlog
from services.events.webhook_records import Claim


def _claim(webhook: str, n: int) -> Claim:
    return Claim(webhook, f"{webhook}-{n}", 0, "", "https://x.example/hook", "sealed", None, b"")


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


def test_claims_come_out_in_order_per_webhook() -> None:
    backlog = Backlog(per_webhook=10, total=10, clock=Clock())
    for n in range(3):
        assert backlog.add(_claim("a", n), start_by=200)
    assert backlog.add(_claim("b", 0), start_by=200)
    stale: list[Claim] = []
    assert [backlog.pop("a", stale) for _ in range(4)] == [
        _claim("a", 0),
        _claim("a", 1),
        _claim("a", 2),
        None,
    ]
    assert (stale, len(backlog), backlog.holds("a"), backlog.holds("b")) == ([], 1, False, True)


def test_bounds_per_webhook_and_in_all() -> None:
    backlog = Backlog(per_webhook=2, total=3, clock=Clock())
    added = [backlog.add(_claim("a", n), start_by=200) for n in range(3)]
    added += [backlog.add(_claim("b", n), start_by=200) for n in range(2)]
    assert added == [True, True, False, True, False]
    assert sorted(c.event_id for c in backlog.drain()) == ["a-0", "a-1", "b-0"]
    assert len(backlog) == 0 and not backlog.holds("a")


def test_a_claim_past_its_start_by_is_handed_back_not_started() -> None:
    clock = Clock()
    backlog = Backlog(per_webhook=10, total=10, clock=clock)
    backlog.add(_claim("a", 0), start_by=150)
    backlog.add(_claim("a", 1), start_by=300)
    clock.now = 200.0
    stale: list[Claim] = []
    assert backlog.pop("a", stale) == _claim("a", 1)
    assert stale == [_claim("a", 0)]
