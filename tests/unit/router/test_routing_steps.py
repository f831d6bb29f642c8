"""The router's decisions and their order: done, then scheduled, then expired, then route."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from postwire.v1 import event_pb2

from libs.mail.states import MessageState, RecipientState
from libs.stage_retry import StageRetry
from services.router.routing_steps import (
    GiveUp,
    Retry,
    Step,
    after_failure,
    after_outage,
    ending,
    first_step,
    unrouted,
)

NOW = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)
RETRY = StageRetry(max_attempts=3, base_seconds=2.0, max_seconds=60.0, give_up_after=timedelta(days=5))
OLD = NOW - timedelta(days=6)


def test_a_message_no_longer_waiting_is_done_whatever_its_age() -> None:
    for state in (MessageState.ROUTED, MessageState.DONE, MessageState.FAILED, MessageState.EXPIRED):
        assert first_step(state, create_time=OLD, send_time=None, now=NOW, retry=RETRY) is Step.DONE


def test_a_scheduled_message_waits_even_if_created_long_ago() -> None:
    later = NOW + timedelta(minutes=5)
    assert (
        first_step(MessageState.ACCEPTED, create_time=OLD, send_time=later, now=NOW, retry=RETRY) is Step.WAIT
    )


def test_expiry_is_decided_before_routing() -> None:
    assert (
        first_step(MessageState.ACCEPTED, create_time=OLD, send_time=None, now=NOW, retry=RETRY)
        is Step.EXPIRE
    )
    fresh = NOW - timedelta(seconds=1)
    assert (
        first_step(MessageState.ACCEPTED, create_time=fresh, send_time=None, now=NOW, retry=RETRY)
        is Step.ROUTE
    )


def test_the_give_up_clock_of_a_scheduled_message_starts_at_its_send_time() -> None:
    due = NOW - timedelta(days=1)
    assert (
        first_step(MessageState.ACCEPTED, create_time=OLD, send_time=due, now=NOW, retry=RETRY) is Step.ROUTE
    )
    exactly = NOW - timedelta(days=5)
    assert (
        first_step(MessageState.ACCEPTED, create_time=OLD, send_time=exactly, now=NOW, retry=RETRY)
        is Step.EXPIRE
    )


def test_an_outage_retries_until_the_give_up_time_then_expires() -> None:
    assert after_outage(NOW - timedelta(days=1), 4.0, now=NOW, retry=RETRY) == Retry(4.0)
    assert after_outage(OLD, 4.0, now=NOW, retry=RETRY) == GiveUp(expired=True)


def test_a_failure_backs_off_until_the_attempts_run_out_then_fails() -> None:
    assert after_failure(1, retry=RETRY) == Retry(2.0)
    assert after_failure(2, retry=RETRY) == Retry(4.0)
    assert after_failure(3, retry=RETRY) == GiveUp(expired=False)


def test_an_ending_names_matching_message_and_recipient_states_and_event() -> None:
    expired = ending(expired=True)
    assert (expired.message, expired.recipient, expired.event) == (
        MessageState.EXPIRED,
        RecipientState.EXPIRED,
        event_pb2.EVENT_TYPE_EXPIRED,
    )
    failed = ending(expired=False)
    assert (failed.message, failed.recipient, failed.event) == (
        MessageState.FAILED,
        RecipientState.FAILED,
        event_pb2.EVENT_TYPE_FAILED,
    )


def test_a_give_up_ends_only_the_recipients_the_router_still_owns() -> None:
    recipients = [
        (0, "a@example.com", RecipientState.ACCEPTED),
        (1, "b@example.com", RecipientState.SUPPRESSED),
        (2, "c@example.com", RecipientState.SCHEDULED),
    ]
    assert unrouted(recipients) == [(0, "a@example.com"), (2, "c@example.com")]
