from datetime import UTC, datetime, timedelta

from libs.stage_retry import StageRetry, failure_reason


def test_delay_doubles_from_two_seconds_and_caps_at_five_minutes() -> None:
    retry = StageRetry()
    assert [retry.delay(n) for n in range(1, 6)] == [2.0, 4.0, 8.0, 16.0, 32.0]
    assert retry.delay(9) == 300.0
    assert retry.delay(10_000) == 300.0


def test_outages_back_off_on_a_shorter_cap() -> None:
    retry = StageRetry()
    assert retry.unavailable_delay(1) == 2.0
    assert retry.unavailable_delay(50) == 30.0


def test_exhausted_after_max_attempts() -> None:
    retry = StageRetry(max_attempts=5)
    assert not retry.exhausted(4)
    assert retry.exhausted(5)


def test_give_up_time_is_start_plus_give_up_after() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    assert StageRetry(give_up_after=timedelta(hours=1)).give_up_time(start) == start + timedelta(hours=1)


def test_failure_reason_names_stage_and_class_only() -> None:
    assert failure_reason("router", ValueError("secret@example.com")) == "router: ValueError"
