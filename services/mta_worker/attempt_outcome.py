"""What one delivery attempt means for one recipient; pure.

The order is the rule: a delivery is a delivery and a permanent failure a bounce whatever the
recipient's age; only a failure that would be retried checks the give-up time, and expires the
recipient instead of deferring it once that has passed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from postwire.v1 import event_pb2, message_pb2

from libs.mail.smtp_outcome import Classification, Reply, Verdict
from libs.mail.states import RecipientState
from services.mta_worker.retry_schedule import RetryPolicy

__all__ = ["RETRIES_EXHAUSTED", "SANDBOX_REASON", "AttemptOutcome", "judge"]

RETRIES_EXHAUSTED = "retries exhausted"
SANDBOX_REASON = "sandbox: nothing was sent to the recipient"


@dataclass(frozen=True, slots=True)
class AttemptOutcome:
    state: RecipientState
    event: event_pb2.EventType.ValueType
    reason: str
    category: message_pb2.BounceCategory.ValueType
    next_attempt_time: datetime | None


def judge(
    judged: Classification,
    reply: Reply,
    /,
    *,
    attempt: int,
    first_attempt_time: datetime,
    now: datetime,
    retry: RetryPolicy,
    server_replied: bool,
    sandbox: bool = False,
) -> AttemptOutcome:
    """`attempt` counts this one (1 = the first); `server_replied` is False when no SMTP server
    answered (DNS, TLS policy, a connection), so the reply text is the reason."""
    reason = reply.text if reply.code == 0 or not server_replied else ""
    unspecified = message_pb2.BOUNCE_CATEGORY_UNSPECIFIED
    if judged.verdict is Verdict.DELIVERED:
        return AttemptOutcome(
            RecipientState.DELIVERED,
            event_pb2.EVENT_TYPE_DELIVERED,
            SANDBOX_REASON if sandbox else "",
            unspecified,
            None,
        )
    if judged.verdict is Verdict.BOUNCED:
        return AttemptOutcome(
            RecipientState.BOUNCED, event_pb2.EVENT_TYPE_BOUNCED, reason, judged.category, None
        )
    if retry.expired(first_attempt_time, now):
        return AttemptOutcome(
            RecipientState.EXPIRED, event_pb2.EVENT_TYPE_EXPIRED, RETRIES_EXHAUSTED, unspecified, None
        )
    delay = retry.delay_after_lost_reply(attempt) if reply.after_final_dot else retry.delay(attempt)
    return AttemptOutcome(
        RecipientState.DEFERRED,
        event_pb2.EVENT_TYPE_DEFERRED,
        reason,
        judged.category,
        now + timedelta(seconds=delay),
    )
