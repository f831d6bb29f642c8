"""Which stored events add their recipient to the tenant's suppression list; pure.

Two rules. A HARD bounce suppresses (synchronous, or asynchronous from a DSN): SOFT, BLOCK,
THROTTLE and CONFIG failures say nothing against the address (a full mailbox empties, a block
list is the sender's to fix). A complaint (COMPLAINED, from a feedback loop) suppresses with
SUPPRESSION_REASON_COMPLAINT: the recipient asked not to get this mail, and mailbox providers
count every further message to them against the sender.
"""

from __future__ import annotations

from dataclasses import dataclass

from postwire.internal.v1 import bus_pb2
from postwire.v1 import event_pb2, message_pb2, suppression_service_pb2

__all__ = ["MAX_RETRY_SECONDS", "PendingSuppression", "retry_delay", "suppression_for"]

# A failed attempt waits 1 s, 2 s, 4 s ... up to this, and is retried at that pace for as long as
# it takes: a suppression is never dropped, and policy is back within a minute of any outage.
MAX_RETRY_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class PendingSuppression:
    """A suppression owed to policy, keyed by the event that caused it."""

    event_id: str
    tenant_id: str
    address: str
    reason: int  # postwire.v1.SuppressionReason
    source_message_id: str
    detail: str  # for an operator: "hard bounce: 550 5.1.1 User unknown"
    attempts: int = 0


def suppression_for(envelope: bus_pb2.EventEnvelope) -> PendingSuppression | None:
    event = envelope.event
    if event.type == event_pb2.EVENT_TYPE_COMPLAINED and event.recipient:
        return PendingSuppression(
            event_id=event.id,
            tenant_id=envelope.tenant_id,
            address=event.recipient,
            reason=suppression_service_pb2.SUPPRESSION_REASON_COMPLAINT,
            source_message_id=event.message_id,
            detail=(event.reason or "complaint")[:512],
        )
    if (
        event.type != event_pb2.EVENT_TYPE_BOUNCED
        or event.bounce_category != message_pb2.BOUNCE_CATEGORY_HARD
    ):
        return None
    if not event.recipient:
        return None
    reply = event.smtp_reply
    why = f"{reply.code} {reply.text}" if reply.code else event.reason
    return PendingSuppression(
        event_id=event.id,
        tenant_id=envelope.tenant_id,
        address=event.recipient,
        reason=suppression_service_pb2.SUPPRESSION_REASON_HARD_BOUNCE,
        source_message_id=event.message_id,
        detail=f"hard bounce: {why}"[:512],
    )


def retry_delay(attempts: int) -> float:
    """Seconds before the next attempt, after `attempts` failed ones (at least 1)."""
    # The exponent is capped too: a row failing for weeks must not overflow a float.
    return min(MAX_RETRY_SECONDS, 2.0 ** min(max(attempts, 1) - 1, 32))
