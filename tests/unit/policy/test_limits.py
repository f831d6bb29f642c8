"""Limit validation, which limits apply, and period arithmetic; pure."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.policy.api_keys import scope_violations
from services.policy.limits import (
    Limits,
    applicable,
    check_limits,
    oversize_refusal,
    quota_refusal,
    seconds_until_period_end,
)


def test_valid_limits_pass() -> None:
    assert (
        check_limits([Limits("*", 10, 20, 1000, 20000), Limits("transactional", 5), Limits("news-letter_2")])
        == []
    )


def test_each_bad_field_is_named() -> None:
    got = check_limits(
        [
            Limits("Bad Stream"),
            Limits("x", recipients_per_second=-1, burst=-2, recipients_per_day=-3, recipients_per_month=-4),
            Limits("y", burst=5),
            Limits("x"),
            Limits("z", recipients_per_second=float("nan")),
        ]
    )
    assert [field for field, _ in got] == [
        "tenant.limits[0].stream",
        "tenant.limits[1].recipients_per_second",
        "tenant.limits[1].burst",
        "tenant.limits[1].recipients_per_day",
        "tenant.limits[1].recipients_per_month",
        "tenant.limits[2].burst",
        "tenant.limits[3].stream",
        "tenant.limits[4].recipients_per_second",
    ]


def test_applicable_takes_the_stream_and_tenant_wide_in_a_fixed_order() -> None:
    limits = [Limits("transactional"), Limits("broadcast"), Limits("*")]
    assert [lim.stream for lim in applicable(limits, "transactional")] == ["*", "transactional"]
    assert [lim.stream for lim in applicable(list(reversed(limits)), "transactional")] == [
        "*",
        "transactional",
    ]
    assert applicable([Limits("broadcast")], "transactional") == []


@pytest.mark.parametrize(
    ("rate", "burst", "effective"), [(10, 0, 10), (0.5, 0, 1), (2.5, 0, 3), (10, 40, 40)]
)
def test_effective_burst(rate: float, burst: int, effective: int) -> None:
    assert Limits("*", rate, burst).effective_burst == effective


def test_periods_end_at_utc_midnight_and_month_start() -> None:
    now = datetime(2026, 12, 31, 23, 0, tzinfo=UTC)
    assert seconds_until_period_end("day", now) == 3600
    assert seconds_until_period_end("month", now) == 3600
    assert seconds_until_period_end("month", datetime(2026, 2, 28, 0, 0, tzinfo=UTC)) == 86400


def test_refusals_carry_the_numbers() -> None:
    now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    refusal = quota_refusal(Limits("*", recipients_per_month=100), "month", 100, 99, 2, now)
    assert refusal.subject == "tenant (all streams)"
    assert refusal.description == "monthly quota of 100 recipients: 99 used, 2 requested"
    assert refusal.retry_after == (datetime(2026, 12, 1, tzinfo=UTC) - now).total_seconds()
    big = oversize_refusal(Limits("transactional", 1, 3), 4)
    assert big.retry_after == 0 and "exceed the burst of 3" in big.description


def test_scopes() -> None:
    assert scope_violations(["send", "events:read"]) == []
    assert [f for f, _ in scope_violations(["send", "admin", "send"])] == ["scopes[1]", "scopes"]
    assert [f for f, _ in scope_violations([])] == ["scopes"]
