"""One attempt's reply → the recipient's state, event and next attempt, in the order that matters:
delivered and bounced whatever the age, then expired, then deferred."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from postwire.v1 import event_pb2, message_pb2

from libs.mail.smtp_outcome import Classification, Reply, Verdict, classify
from libs.mail.states import RecipientState
from services.mta_worker.attempt_outcome import RETRIES_EXHAUSTED, SANDBOX_REASON, judge
from services.mta_worker.retry_schedule import LOST_REPLY_FACTOR, RetryPolicy

NOW = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)
RETRY = RetryPolicy(base_seconds=60.0, max_seconds=3600.0, give_up_after=timedelta(days=5), jitter=0.0)
FRESH = NOW - timedelta(minutes=1)
OLD = NOW - timedelta(days=5)

OK = Reply(250, "2.0.0", "2.0.0 ok")
GONE = Reply(550, "5.1.1", "5.1.1 user unknown")
LATER = Reply(451, "4.3.0", "4.3.0 try later")


def _judge(reply: Reply, first: datetime, *, attempt: int = 3, remote: bool = True, sandbox: bool = False):
    return judge(
        classify(reply),
        reply,
        attempt=attempt,
        first_attempt_time=first,
        now=NOW,
        retry=RETRY,
        server_replied=remote,
        sandbox=sandbox,
    )


@pytest.mark.parametrize("first", [FRESH, OLD])
def test_a_delivery_is_a_delivery_whatever_the_age(first: datetime) -> None:
    result = _judge(OK, first)
    assert (result.state, result.event, result.next_attempt_time) == (
        RecipientState.DELIVERED,
        event_pb2.EVENT_TYPE_DELIVERED,
        None,
    )
    assert result.reason == "" and result.category == message_pb2.BOUNCE_CATEGORY_UNSPECIFIED


@pytest.mark.parametrize("first", [FRESH, OLD])
def test_a_permanent_failure_bounces_whatever_the_age(first: datetime) -> None:
    result = _judge(GONE, first)
    assert (result.state, result.event, result.category, result.next_attempt_time) == (
        RecipientState.BOUNCED,
        event_pb2.EVENT_TYPE_BOUNCED,
        message_pb2.BOUNCE_CATEGORY_HARD,
        None,
    )


def test_a_retryable_failure_past_the_give_up_time_expires_instead_of_deferring() -> None:
    result = _judge(LATER, OLD)
    assert (result.state, result.event, result.reason, result.next_attempt_time) == (
        RecipientState.EXPIRED,
        event_pb2.EVENT_TYPE_EXPIRED,
        RETRIES_EXHAUSTED,
        None,
    )


def test_a_retryable_failure_defers_on_the_schedule() -> None:
    result = _judge(LATER, FRESH, attempt=3)
    assert (result.state, result.event) == (RecipientState.DEFERRED, event_pb2.EVENT_TYPE_DEFERRED)
    assert result.category == classify(LATER).category
    assert result.next_attempt_time == NOW + timedelta(seconds=RETRY.delay(3, rng=random.Random(0)))


def test_a_lost_reply_to_the_final_dot_waits_longer_before_the_next_offer() -> None:
    lost = Reply(0, "", "connection lost after the final '.'", after_final_dot=True)
    result = _judge(lost, FRESH, attempt=1, remote=False)
    assert result.state is RecipientState.DEFERRED
    assert result.next_attempt_time == NOW + timedelta(seconds=LOST_REPLY_FACTOR * 60.0)
    assert result.reason == lost.text  # no server reply: the text is the reason


def test_the_reply_text_is_the_reason_only_when_no_server_answered() -> None:
    assert _judge(LATER, FRESH, remote=True).reason == ""
    assert _judge(LATER, FRESH, remote=False).reason == LATER.text


def test_a_sandbox_delivery_says_nothing_was_sent() -> None:
    assert _judge(OK, FRESH, sandbox=True).reason == SANDBOX_REASON


def test_a_given_classification_wins_over_the_reply_code() -> None:
    # DNS answers and TLS policy decide without an SMTP reply (code 0).
    dns = Reply(0, "5.1.2", "no such domain")
    result = judge(
        Classification(Verdict.BOUNCED, message_pb2.BOUNCE_CATEGORY_HARD),
        dns,
        attempt=1,
        first_attempt_time=FRESH,
        now=NOW,
        retry=RETRY,
        server_replied=False,
    )
    assert (result.state, result.reason) == (RecipientState.BOUNCED, "no such domain")


def test_every_verdict_names_the_recipient_state_it_leads_to() -> None:
    assert {v.value for v in Verdict} <= set(RecipientState)
