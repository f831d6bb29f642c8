"""RetryPolicy: exponential back-off from base, capped, ±20 % jitter, give up after a fixed time."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from services.mta_worker.retry_schedule import RetryPolicy

NO_JITTER = RetryPolicy(base_seconds=60.0, max_seconds=3600.0, jitter=0.0)


@pytest.mark.parametrize(
    ("attempt", "seconds"),
    [(1, 60.0), (2, 120.0), (3, 240.0), (4, 480.0), (5, 960.0), (6, 1920.0)],
)
def test_delay_doubles_from_base(attempt: int, seconds: float) -> None:
    assert NO_JITTER.delay(attempt) == seconds


@pytest.mark.parametrize("attempt", [7, 8, 20, 100, 1000])
def test_delay_is_capped(attempt: int) -> None:
    assert NO_JITTER.delay(attempt) == 3600.0


@pytest.mark.parametrize("attempt", [0, -3])
def test_attempt_below_one_waits_the_base(attempt: int) -> None:
    assert NO_JITTER.delay(attempt) == 60.0


def test_defaults() -> None:
    policy = RetryPolicy()
    assert (policy.base_seconds, policy.max_seconds, policy.jitter) == (60.0, 3600.0, 0.2)
    assert policy.give_up_after == timedelta(days=5)


@pytest.mark.parametrize("attempt", [1, 2, 3, 5, 7, 12])
def test_jitter_stays_within_twenty_percent(attempt: int) -> None:
    policy = RetryPolicy()
    raw = min(3600.0, 60.0 * 2 ** (attempt - 1))
    delays = [policy.delay(attempt, rng=random.Random(seed)) for seed in range(300)]
    assert all(raw * 0.8 <= d <= raw * 1.2 for d in delays)
    # Jitter actually spreads retries: both halves of the band are used.
    assert min(delays) < raw * 0.9
    assert max(delays) > raw * 1.1


def test_jitter_is_reproducible_with_a_seeded_rng() -> None:
    policy = RetryPolicy()
    assert policy.delay(4, rng=random.Random(7)) == policy.delay(4, rng=random.Random(7))
    assert policy.delay(4, rng=random.Random(7)) != policy.delay(4, rng=random.Random(8))


def test_jitter_on_the_cap_stays_within_twenty_percent_of_the_cap() -> None:
    policy = RetryPolicy()
    delays = [policy.delay(30, rng=random.Random(seed)) for seed in range(100)]
    assert all(2880.0 <= d <= 4320.0 for d in delays)


def test_delay_without_rng_uses_the_module_random() -> None:
    assert 48.0 <= RetryPolicy().delay(1) <= 72.0


def test_expired_at_exactly_give_up_after() -> None:
    policy = RetryPolicy(give_up_after=timedelta(days=5))
    first = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
    assert policy.expired(first, first + timedelta(days=5)) is True
    assert policy.expired(first, first + timedelta(days=5, microseconds=-1)) is False
    assert policy.expired(first, first + timedelta(days=6)) is True
    assert policy.expired(first, first) is False


def test_delay_is_capped_for_very_large_attempt_numbers() -> None:
    assert RetryPolicy(base_seconds=1.0, max_seconds=2.0, jitter=0.0).delay(1025) == 2.0
    assert 1.6 <= RetryPolicy(base_seconds=1.0, max_seconds=2.0).delay(5000, rng=random.Random(1)) <= 2.4


@pytest.mark.parametrize("attempt", [1, 2, 5, 7, 100])
@pytest.mark.parametrize("seed", range(20))
def test_a_lost_reply_to_the_final_dot_is_retried_later_than_any_ordinary_deferral(
    attempt: int, seed: int
) -> None:
    policy = RetryPolicy(base_seconds=60.0, max_seconds=3600.0)
    ordinary = max(policy.delay(attempt, rng=random.Random(s)) for s in range(50))
    assert policy.delay_after_lost_reply(attempt, rng=random.Random(seed)) > ordinary
