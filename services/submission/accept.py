"""SendEmail's use case: every step of accepting a message, in the order the README promises.

validate → authorize → replay check → send_time → template check → admit → store → publish.

A replay is answered before anything time-dependent or costly runs, so a retry never eats quota
nor meets a check the first call passed (README, "checks in this order"). The ports are Protocols
so the order can be pinned by unit tests with plain fakes; the gRPC, PostgreSQL and NATS adapters
live in policy_client.py, template_client.py, store.py and publisher.py.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from postwire.internal.v1 import bus_pb2
from postwire.v1 import event_pb2, mail_service_pb2, message_pb2, template_pb2

from libs.errors import AlreadyExists
from libs.event_envelopes import EventContext, new_event
from libs.mail.addresses import to_ascii_address
from libs.mail.states import MessageState, RecipientState
from libs.render_request import versions_to_json
from libs.runtime import log_fields
from services.submission.messages import MessageRow, NewMessage
from services.submission.validation import ValidatedSend, check_send_time, validate_send

__all__ = [
    "Accept",
    "Accepted",
    "Admission",
    "AdmissionQuery",
    "Authorize",
    "Caller",
    "MessageStore",
    "PinnedTemplate",
    "Policy",
    "Publisher",
    "Replayed",
    "TemplateChecker",
]


_log = logging.getLogger(__name__)


class Caller(Protocol):
    @property
    def tenant_id(self) -> str: ...


# Resolves the caller's key and checks its `send` scope; called only once the request is known to be
# well-formed, so a bad request sent with a bad key gets INVALID_ARGUMENT.
Authorize = Callable[[], Awaitable[Caller]]


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


class MessageStore(Protocol):
    async def find_by_idempotency_key(self, tenant_id: str, key: str) -> MessageRow | None: ...

    async def accept(self, message: NewMessage, events: Sequence[bus_pb2.EventEnvelope]) -> str | None:
        """The stored id, or None when a concurrent call with the same key stored first."""
        ...


class Policy(Protocol):
    async def admit(self, query: AdmissionQuery) -> Admission:
        """Fails closed: raises (UNAVAILABLE) rather than admit unchecked."""
        ...


class TemplateChecker(Protocol):
    async def pin(self, tenant_id: str, ref: message_pb2.TemplateReference) -> PinnedTemplate:
        """Render once now, so a template that cannot render for these variables is the caller's
        INVALID_ARGUMENT rather than a FAILED event later."""
        ...


class Publisher(Protocol):
    async def publish_after_commit(
        self, message_id: str, events: Sequence[bus_pb2.EventEnvelope], *, route: bool
    ) -> None:
        """Returns within the publish budget whatever the bus does; the sweepers repair a miss."""
        ...


@dataclass(frozen=True, slots=True)
class Accepted:
    message_id: str
    recipients: tuple[tuple[str, int, RecipientState], ...]  # (address, kind, state) in request order


@dataclass(frozen=True, slots=True)
class Replayed:
    """The first call's message, for a retry with the same idempotency key and request."""

    message: MessageRow


def _now() -> datetime:
    return datetime.now(UTC)


class Accept:
    def __init__(
        self,
        *,
        store: MessageStore,
        policy: Policy,
        templates: TemplateChecker,
        publisher: Publisher,
        stall: timedelta,
        clock: Callable[[], datetime] = _now,
        new_id: Callable[[], uuid.UUID] = uuid.uuid4,
    ) -> None:
        self._store = store
        self._policy = policy
        self._templates = templates
        self._publisher = publisher
        # How long after acceptance the router's sweeper steps in if the route task never arrives.
        self._stall = stall
        self._clock = clock
        self._new_id = new_id

    async def accept(
        self, request: mail_service_pb2.SendEmailRequest, /, *, authorize: Authorize
    ) -> Accepted | Replayed:
        validated = validate_send(request)
        tenant_id = (await authorize()).tenant_id
        request_hash = hashlib.sha256(request.SerializeToString(deterministic=True)).digest()
        key = request.idempotency_key or None
        if key is not None:
            existing = await self._store.find_by_idempotency_key(tenant_id, key)
            if existing is not None:
                return _replay(existing, request_hash)

        now = self._clock()
        check_send_time(request, now=now)
        template_versions = None
        if request.HasField("template"):
            pinned = await self._templates.pin(tenant_id, validated.request.template)
            _pin(validated.request.template, pinned)
            template_versions = versions_to_json(pinned.versions)
        admission = await self._policy.admit(_admission_query(tenant_id, validated))

        send_time = request.send_time.ToDatetime(tzinfo=UTC) if request.HasField("send_time") else None
        scheduled = send_time is not None and send_time > now
        message_id = self._new_id()
        recipients = tuple(
            (address, kind, _first_state(suppressed=suppressed, scheduled=scheduled))
            for (address, kind), suppressed in zip(validated.recipients, admission.suppressed, strict=True)
        )
        events = _first_events(
            EventContext(
                tenant_id=tenant_id,
                message_id=str(message_id),
                stream=validated.stream,
                tags=tuple(request.tags),
                metadata=dict(request.metadata),
            ),
            recipients,
            now,
        )
        admitted = any(state != RecipientState.SUPPRESSED for _, _, state in recipients)
        new = NewMessage(
            id=message_id,
            tenant_id=tenant_id,
            idempotency_key=key,
            request_hash=request_hash,
            request=validated.request.SerializeToString(),
            stream=validated.stream,
            tags=list(request.tags),
            metadata=dict(request.metadata),
            send_time=send_time,
            route_due_time=send_time if scheduled and send_time else now + self._stall,
            state=MessageState.ACCEPTED if admitted else MessageState.DONE,
            recipients=recipients,
            template_versions=template_versions,
            sandbox=admission.sandbox or request.sandbox,
        )
        stored_id = await self._store.accept(new, events)
        if stored_id is None:
            return await self._lost_race(tenant_id, key, request_hash)

        # The commit above is what makes the message durable; from here a failed publish is
        # repaired by the sweepers (router's for the task, events' for the outbox). A scheduled
        # message is routed by the router's sweeper at its send time.
        await self._publisher.publish_after_commit(stored_id, events, route=admitted and not scheduled)
        # One line per accepted message; counts only, never an address.
        _log.info(
            "message accepted",
            extra=log_fields(
                message_id=stored_id,
                tenant_id=tenant_id,
                recipients=len(recipients),
                suppressed=sum(state == RecipientState.SUPPRESSED for _, _, state in recipients),
                stream=validated.stream,
                scheduled=scheduled,
            ),
        )
        return Accepted(message_id=stored_id, recipients=recipients)

    async def _lost_race(self, tenant_id: str, key: str | None, request_hash: bytes) -> Replayed:
        """A concurrent call with the same key stored first: answer as its replay."""
        existing = None if key is None else await self._store.find_by_idempotency_key(tenant_id, key)
        if existing is None:
            raise AlreadyExists("idempotency key in use", field="idempotency_key")
        return _replay(existing, request_hash)


def _replay(existing: MessageRow, request_hash: bytes) -> Replayed:
    if existing.request_hash != request_hash:
        raise AlreadyExists(
            "this idempotency key was already used with a different request",
            field="idempotency_key",
            existing_id=existing.id,
        )
    return Replayed(existing)


def _pin(ref: message_pb2.TemplateReference, pinned: PinnedTemplate) -> None:
    ref.id = pinned.template_id
    ref.name = ""
    ref.version = pinned.version


def _admission_query(tenant_id: str, validated: ValidatedSend) -> AdmissionQuery:
    sender = getattr(validated.request, "from").address
    return AdmissionQuery(
        tenant_id=tenant_id,
        stream=validated.stream,
        recipients=tuple(address for address, _ in validated.recipients),
        unsubscribe_group=validated.request.unsubscribe_group,
        from_domain=to_ascii_address(sender).rpartition("@")[2].lower(),
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
