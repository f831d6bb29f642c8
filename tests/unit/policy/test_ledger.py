"""Charging limits on locked state: request order, all or none per send (no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.policy.ledger import Ledger, quota_keys, rate_keys
from services.policy.limits import Limits

NOW = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
A = "7d1f3c1e-0000-4000-8000-00000000000a"
B = "7d1f3c1e-0000-4000-8000-00000000000b"


def test_sends_are_charged_in_order_and_a_refused_one_takes_nothing() -> None:
    rate = Limits("*", recipients_per_second=1.0, burst=5)
    daily = Limits("transactional", recipients_per_day=4)
    ledger = Ledger(NOW, {(A, "*"): NOW}, {(A, "transactional", "day"): 0})

    outcomes = [ledger.charge(A, [(rate, n), (daily, n)]) for n in (2, 3, 1, 1)]

    # 2 fit; 3 more pass the burst but not the quota (2 + 3 > 4), so the rate takes nothing
    # either; 1 and 1 fit the quota exactly.
    assert [o is None for o in outcomes] == [True, False, True, True]
    refused = outcomes[1]
    assert refused is not None and "daily quota of 4 recipients: 2 used, 3 requested" in refused.description
    assert ledger.used[(A, "transactional", "day")] == 4
    assert ledger.tats[(A, "*")] == NOW + timedelta(seconds=4)
    assert ledger.changed_tats == {(A, "*")}


def test_a_rate_refusal_says_how_long_to_wait() -> None:
    rate = Limits("*", recipients_per_second=2.0, burst=2)
    ledger = Ledger(NOW, {(A, "*"): NOW + timedelta(seconds=1)}, {})

    refusal = ledger.charge(A, [(rate, 1)])

    assert refusal is not None and refusal.retry_after == 0.5
    assert not ledger.changed_tats


def test_keys_are_sorted_and_distinct_across_tenants() -> None:
    rate = Limits("*", recipients_per_second=1.0, recipients_per_month=9)
    sends = [(B, [(rate, 1)]), (A, [(rate, 1), (Limits("x", recipients_per_day=1), 1)]), (B, [(rate, 2)])]

    assert rate_keys(sends) == [(A, "*"), (B, "*")]
    assert quota_keys(sends) == [(A, "*", "month"), (A, "x", "day"), (B, "*", "month")]
