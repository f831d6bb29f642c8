"""SendEmail's use case: every step of accepting a message, in the order the README promises.

validate → authorize → replay check → send_time → template check → admit → store → publish.

A replay is answered before anything time-dependent or costly runs, so a retry never eats quota
nor meets a check the first call passed (README, "checks in this order"). The ports are Protocols
so the order can be pinned by unit tests with plain fakes; the gRPC, PostgreSQL and NATS adapters
live in policy_client.py, template_client.py, store.py and publisher.py.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from postwire.internal.v1 import bus_pb2
from postwire.v1 import mail_service_pb2, message_pb2

from libs.errors import AlreadyExists
from libs.mail.states import RecipientState
from libs.runtime import log_fields
from services.submission.acceptance import (
    Accepted,
    Admission,
    AdmissionQuery,
    PinnedTemplate,
    Replayed,
    Stamp,
    admission_query,
    pin,
    replay,
    request_hash,
    routes_now,
)
from services.submission.messages import MessageRow, NewMessage
from services.submission.validation import check_send_time, validate_send

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
        INVALID_ARGUMENT rather than a FAILED event later; the parts are stored for the router."""
        ...


class Publisher(Protocol):
    async def publish_after_commit(
        self, message_id: str, events: Sequence[bus_pb2.EventEnvelope], *, route: bool
    ) -> None:
        """Returns within the publish budget whatever the bus does; the sweepers repair a miss."""
        ...


class Accept:
    def __init__(
        self,
        *,
        store: MessageStore,
        policy: Policy,
        templates: TemplateChecker,
        publisher: Publisher,
        stamp: Stamp,
    ) -> None:
        self._store = store
        self._policy = policy
        self._templates = templates
        self._publisher = publisher
        self._stamp = stamp

    async def accept(
        self, request: mail_service_pb2.SendEmailRequest, /, *, authorize: Authorize
    ) -> Accepted | Replayed:
        validated = validate_send(request)
        tenant_id = (await authorize()).tenant_id
        hashed = request_hash(request)
        key = request.idempotency_key or None
        if key is not None:
            existing = await self._store.find_by_idempotency_key(tenant_id, key)
            if existing is not None:
                return replay(existing, hashed)

        now = self._stamp.clock()
        check_send_time(request, now=now)
        pinned = None
        if request.HasField("template"):
            pinned = await self._templates.pin(tenant_id, validated.request.template)
            pin(validated.request.template, pinned)
        admission = await self._policy.admit(admission_query(tenant_id, validated))

        new, events = self._stamp.new_message(tenant_id, request, validated, hashed, admission, pinned, now)
        stored_id = await self._store.accept(new, events)
        if stored_id is None:
            return await self._lost_race(tenant_id, key, hashed)

        # The commit above is what makes the message durable; from here a failed publish is
        # repaired by the sweepers (router's for the task, events' for the outbox). A scheduled
        # message is routed by the router's sweeper at its send time.
        await self._publisher.publish_after_commit(stored_id, events, route=routes_now(new))
        # One line per accepted message; counts only, never an address.
        _log.info(
            "message accepted",
            extra=log_fields(
                message_id=stored_id,
                tenant_id=tenant_id,
                recipients=len(new.recipients),
                suppressed=sum(state == RecipientState.SUPPRESSED for _, _, state in new.recipients),
                stream=validated.stream,
                scheduled=new.send_time is not None and new.send_time > now,
            ),
        )
        return Accepted(message_id=stored_id, recipients=tuple(new.recipients))

    async def _lost_race(self, tenant_id: str, key: str | None, hashed: bytes) -> Replayed:
        """A concurrent call with the same key stored first: answer as its replay."""
        existing = None if key is None else await self._store.find_by_idempotency_key(tenant_id, key)
        if existing is None:
            raise AlreadyExists("idempotency key in use", field="idempotency_key")
        return replay(existing, hashed)
