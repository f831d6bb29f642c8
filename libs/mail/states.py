"""Message and recipient states: the one definition every service stores, compares and reports.

Recipient states are the public `postwire.v1.RecipientState` values; each member's stored text is
derived from its proto name (`RECIPIENT_STATE_QUEUED` → `queued`), so the two cannot drift, and
`tests/unit/test_states.py` checks that every proto value has a member. Message states are
internal (no proto carries them). Migration 0018 puts both lists in `CHECK` constraints.

In SQL, pass a member as a parameter; where the predicate must match a partial index (the
planner only uses one when it sees the literal), interpolate the member into the statement text
— it is a constant of ours, never input.
"""

from __future__ import annotations

from enum import StrEnum

from postwire.v1 import message_pb2

__all__ = ["PENDING_STATES", "TERMINAL_STATES", "MessageState", "RecipientState", "sql_list"]

_PREFIX = "RECIPIENT_STATE_"


def _stored(value: message_pb2.RecipientState.ValueType) -> str:
    return message_pb2.RecipientState.Name(value).removeprefix(_PREFIX).lower()


class RecipientState(StrEnum):
    ACCEPTED = _stored(message_pb2.RECIPIENT_STATE_ACCEPTED)
    SCHEDULED = _stored(message_pb2.RECIPIENT_STATE_SCHEDULED)
    QUEUED = _stored(message_pb2.RECIPIENT_STATE_QUEUED)
    DEFERRED = _stored(message_pb2.RECIPIENT_STATE_DEFERRED)
    DELIVERED = _stored(message_pb2.RECIPIENT_STATE_DELIVERED)
    BOUNCED = _stored(message_pb2.RECIPIENT_STATE_BOUNCED)
    SUPPRESSED = _stored(message_pb2.RECIPIENT_STATE_SUPPRESSED)
    FAILED = _stored(message_pb2.RECIPIENT_STATE_FAILED)
    EXPIRED = _stored(message_pb2.RECIPIENT_STATE_EXPIRED)

    @property
    def proto(self) -> message_pb2.RecipientState.ValueType:
        return message_pb2.RecipientState.Value(_PREFIX + self.name)


class MessageState(StrEnum):
    """Where the message (not its recipients) stands in the pipeline."""

    ACCEPTED = "accepted"  # stored; the router has not built it yet
    ROUTED = "routed"  # MIME built; recipients queued for delivery
    DONE = "done"  # nothing to route: every recipient was suppressed at acceptance
    FAILED = "failed"  # the router gave it up
    EXPIRED = "expired"  # its delivery deadline passed before routing


PENDING_STATES = frozenset(
    {RecipientState.ACCEPTED, RecipientState.SCHEDULED, RecipientState.QUEUED, RecipientState.DEFERRED}
)
TERMINAL_STATES = frozenset(RecipientState) - PENDING_STATES


def sql_list(*states: RecipientState | MessageState) -> str:
    """`'queued', 'deferred'` for an `IN (...)` that must match a partial index's literal list."""
    return ", ".join(f"'{s.value}'" for s in states)
