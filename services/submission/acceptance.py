"""The rules SendEmail and SendBatch share once a message is known to be well-formed: how a replay
is told from a reused key, what admission is asked, and what is stored for an accepted message.
Pure, no I/O: accept.py and accept_batch.py run these in their own step order.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from postwire.internal.v1 import bus_pb2
from postwire.v1 import event_pb2, mail_service_pb2, message_pb2, template_pb2

from libs.errors import AlreadyExists
from libs.event_envelopes import EventContext, new_event
from libs.mail.addresses import to_ascii_address
from libs.mail.parts import Parts
from libs.mail.states import MessageState, RecipientState
from libs.render_request import versions_to_json
from services.submission.messages import MessageRow, NewMessage
from services.submission.validation import ValidatedSend

__all__ = [
    "Accepted",
    "Admission",
    "AdmissionQuery",
    "PinnedTemplate",
    "Replayed",
    "Stamp",
    "admission_query",
    "pin",
    "replay",
    "request_hash",
    "routes_now",
]


@dataclass(frozen=True, slots=True)
class AdmissionQuery:
    tenant_id: str
    stream: str
    recipients: tuple[str, ...]
    unsubscribe_group: str
    from_domain: str  # ASCII (A-label), lower case


@dataclass(frozen=True, slots=True)
class Admission:
    suppressed: tuple[bool, ...]  # per recipient, in the query's order
    sandbox: bool  # the tenant is in sandbox mode


@dataclass(frozen=True, slots=True)
class PinnedTemplate:
    """The exact version that rendered, so the router builds what was checked."""

    template_id: str
    version: int
    versions: Sequence[template_pb2.TemplateVersionUsed]  # the template first, then its dependencies
    # What it rendered to: stored with the message so the router does not render it again.
    parts: Parts | None = None


@dataclass(frozen=True, slots=True)
class Accepted:
    message_id: str
    recipients: tuple[tuple[str, int, RecipientState], ...]  # (address, kind, state) in request order


@dataclass(frozen=True, slots=True)
class Replayed:
    """The first call's message, for a retry with the same idempotency key and request."""

    message: MessageRow


def request_hash(request: mail_service_pb2.SendEmailRequest) -> bytes:
    """What tells a replay from a reused key; the same for a message sent alone or in a batch."""
    return hashlib.sha256(request.SerializeToString(deterministic=True)).digest()


def replay(existing: MessageRow, hashed: bytes, *, field: str = "idempotency_key") -> Replayed:
    if existing.request_hash != hashed:
        raise AlreadyExists(
            "this idempotency key was already used with a different request",
            field=field,
            existing_id=existing.id,
        )
    return Replayed(existing)


def pin(ref: message_pb2.TemplateReference, pinned: PinnedTemplate) -> None:
    ref.id = pinned.template_id
    ref.name = ""
    ref.version = pinned.version


def admission_query(tenant_id: str, validated: ValidatedSend) -> AdmissionQuery:
    sender = getattr(validated.request, "from").address
    return AdmissionQuery(
        tenant_id=tenant_id,
        stream=validated.stream,
        recipients=tuple(address for address, _ in validated.recipients),
        unsubscribe_group=validated.request.unsubscribe_group,
        from_domain=to_ascii_address(sender).rpartition("@")[2].lower(),
    )


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Stamp:
    """What SendEmail and SendBatch give every message they accept: a new id, the time, and when
    the router's sweeper steps in if the route task never arrives (`stall` after acceptance)."""

    stall: timedelta
    clock: Callable[[], datetime] = _now
    new_id: Callable[[], uuid.UUID] = uuid.uuid4

    def new_message(
        self,
        tenant_id: str,
        original: mail_service_pb2.SendEmailRequest,
        validated: ValidatedSend,
        hashed: bytes,
        admission: Admission,
        pinned: PinnedTemplate | None,
        now: datetime,
    ) -> tuple[NewMessage, list[bus_pb2.EventEnvelope]]:
        """The row to store for an admitted message and its recipients' first events.

        `validated.request` must already carry the pinned template (see `pin`)."""
        message_id = self.new_id()
        send_time = original.send_time.ToDatetime(tzinfo=UTC) if original.HasField("send_time") else None
        scheduled = send_time is not None and send_time > now
        recipients = tuple(
            (address, kind, _first_state(suppressed=suppressed, scheduled=scheduled))
            for (address, kind), suppressed in zip(validated.recipients, admission.suppressed, strict=True)
        )
        events = _first_events(
            EventContext(
                tenant_id=tenant_id,
                message_id=str(message_id),
                stream=validated.stream,
                tags=tuple(original.tags),
                metadata=dict(original.metadata),
            ),
            recipients,
            now,
        )
        admitted = any(state != RecipientState.SUPPRESSED for _, _, state in recipients)
        message = NewMessage(
            id=message_id,
            tenant_id=tenant_id,
            idempotency_key=original.idempotency_key or None,
            request_hash=hashed,
            request=validated.request.SerializeToString(),
            stream=validated.stream,
            tags=list(original.tags),
            metadata=dict(original.metadata),
            send_time=send_time,
            route_due_time=send_time if scheduled and send_time else now + self.stall,
            state=MessageState.ACCEPTED if admitted else MessageState.DONE,
            recipients=recipients,
            template_versions=None if pinned is None else versions_to_json(pinned.versions),
            sandbox=admission.sandbox or original.sandbox,
            rendered=None if pinned is None else pinned.parts,
        )
        return message, events


def routes_now(message: NewMessage) -> bool:
    """Whether the route task goes out at acceptance: a scheduled message is routed by the
    router's sweeper at its send time, and one with every recipient suppressed never is."""
    return message.state is MessageState.ACCEPTED and any(
        state is RecipientState.ACCEPTED for _, _, state in message.recipients
    )


def _first_state(*, suppressed: bool, scheduled: bool) -> RecipientState:
    if suppressed:
        return RecipientState.SUPPRESSED
    if scheduled:
        return RecipientState.SCHEDULED
    return RecipientState.ACCEPTED


_FIRST_EVENT: dict[RecipientState, event_pb2.EventType.ValueType] = {
    RecipientState.SUPPRESSED: event_pb2.EVENT_TYPE_SUPPRESSED,
    RecipientState.SCHEDULED: event_pb2.EVENT_TYPE_SCHEDULED,
    RecipientState.ACCEPTED: event_pb2.EVENT_TYPE_ACCEPTED,
}


def _first_events(
    ctx: EventContext, recipients: Sequence[tuple[str, int, RecipientState]], now: datetime
) -> list[bus_pb2.EventEnvelope]:
    return [
        new_event(ctx, _FIRST_EVENT[state], address, discriminator=str(position), when=now)
        for position, (address, _, state) in enumerate(recipients)
    ]
