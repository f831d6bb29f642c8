"""Event envelopes as the pipeline writes them: pure values, no I/O.

Kept apart from `libs.event_outbox` (which stores and publishes them) so a use case can build the
events of a state change without importing a database or bus client.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from postwire.internal.v1 import bus_pb2
from postwire.v1 import event_pb2, message_pb2

__all__ = ["EventContext", "new_event"]


@dataclass(frozen=True, slots=True)
class EventContext:
    """Per-message facts every event of that message repeats."""

    tenant_id: str
    message_id: str
    stream: str
    tags: Sequence[str] = ()
    metadata: Mapping[str, str] | None = None


def new_event(
    ctx: EventContext,
    event_type: event_pb2.EventType.ValueType,
    recipient: str,
    *,
    discriminator: str,
    smtp_reply: message_pb2.SmtpReply | None = None,
    attempt: int = 0,
    next_attempt_time: datetime | None = None,
    reason: str = "",
    when: datetime | None = None,
    bounce_category: int = 0,
    remote: message_pb2.RemoteServer | None = None,
) -> bus_pb2.EventEnvelope:
    """`discriminator` makes the id deterministic (position, type, attempt), so a retried step
    cannot mint a second event for the same outcome."""
    type_name = event_pb2.EventType.Name(event_type).removeprefix("EVENT_TYPE_").lower()
    event = event_pb2.Event(
        id=f"{ctx.message_id}:{discriminator}:{type_name}",
        type=event_type,
        message_id=ctx.message_id,
        recipient=recipient,
        stream=ctx.stream,
        tags=list(ctx.tags),
        metadata=dict(ctx.metadata or {}),
        attempt=attempt,
        reason=reason,
        bounce_category=message_pb2.BounceCategory.ValueType(bounce_category),
    )
    event.create_time.FromDatetime(when or datetime.now(UTC))
    if smtp_reply is not None:
        event.smtp_reply.CopyFrom(smtp_reply)
    if next_attempt_time is not None:
        event.next_attempt_time.FromDatetime(next_attempt_time)
    if remote is not None:
        event.remote.CopyFrom(remote)
    return bus_pb2.EventEnvelope(tenant_id=ctx.tenant_id, event=event)
