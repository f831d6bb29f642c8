"""postwire.v1.MailService: proto ↔ domain; the accept rules live in validation and the store."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from postwire.internal.v1 import (
    bus_pb2,
    event_reader_service_pb2_grpc,
    policy_service_pb2,
    policy_service_pb2_grpc,
    render_service_pb2_grpc,
)
from postwire.v1 import event_pb2, mail_service_pb2, mail_service_pb2_grpc, message_pb2, template_pb2

from libs.bus import ROUTE_SUBJECT, Bus
from libs.errors import AlreadyExists, InvalidArgument, NotFound, Unimplemented
from libs.event_outbox import EventContext, new_event, publish_events
from libs.grpcx.auth import KeyResolver, bearer_token
from libs.grpcx.status import error_from_rpc
from libs.mail.addresses import to_ascii_address
from libs.mail.states import RecipientState
from libs.render_request import render_request, versions_from_json, versions_to_json
from services.submission.store import MessageRow, NewMessage, SubmissionStore
from services.submission.timeline import read_timeline
from services.submission.validation import ValidatedSend, check_send_time, validate_send

_log = logging.getLogger(__name__)
# How long SendEmail waits, after its commit, for the route task and events to reach NATS. The
# message is durable already; a publish that misses this budget is the sweepers' job, so a slow
# or absent NATS never holds up the caller (issue 9 item 4: p99 <= 0.5 s during an outage).
PUBLISH_BUDGET_SECONDS = 0.25


def _recipient_statuses(row: MessageRow) -> list[message_pb2.RecipientStatus]:
    out = []
    for r in row.recipients:
        status = message_pb2.RecipientStatus(
            address=r.address,
            kind=r.kind,
            state=RecipientState(r.state).proto,
            attempts=r.attempts,  # type: ignore[arg-type]
            reason=r.failure_reason or "",
        )
        if r.last_code is not None:
            status.last_reply.code = r.last_code
            status.last_reply.enhanced_code = r.last_enhanced or ""
            status.last_reply.text = r.last_text or ""
        if r.next_attempt_time is not None and r.state == "deferred":
            status.next_attempt_time.FromDatetime(r.next_attempt_time)
        status.update_time.FromDatetime(r.update_time)
        out.append(status)
    return out


class MailApi(mail_service_pb2_grpc.MailServiceServicer):
    def __init__(
        self,
        store: SubmissionStore,
        bus: Bus,
        policy: policy_service_pb2_grpc.PolicyServiceStub,
        keys: KeyResolver,
        render: render_service_pb2_grpc.RenderServiceStub,
        events: event_reader_service_pb2_grpc.EventReaderServiceStub,
        *,
        stall: timedelta,
        publish_budget: float = PUBLISH_BUDGET_SECONDS,
    ) -> None:
        self._events = events
        self._stall = stall
        self._publish_budget = publish_budget
        self._publishing: set[asyncio.Future[Any]] = set()
        self._render = render
        self._store = store
        self._bus = bus
        self._policy = policy
        self._keys = keys

    async def SendEmail(
        self, request: mail_service_pb2.SendEmailRequest, context: grpc.aio.ServicerContext
    ) -> mail_service_pb2.SendEmailResponse:
        # The order is the contract (README, "checks in this order"): a replay is answered before
        # anything time-dependent or costly runs, so a retry never eats quota nor meets a check
        # the first call passed.
        bearer_token(context)
        now = datetime.now(UTC)
        validated = validate_send(request)
        caller = await self._keys.resolve(context)
        caller.require("send")
        tenant_id = caller.tenant_id
        request_hash = hashlib.sha256(request.SerializeToString(deterministic=True)).digest()
        key = request.idempotency_key or None
        if key is not None:
            existing = await self._store.find_by_idempotency_key(tenant_id, key)
            if existing is not None:
                return self._replay(existing, request_hash)

        check_send_time(request, now=now)
        template_versions = None
        if request.HasField("template"):
            template_versions = versions_to_json(await self._check_template(tenant_id, validated.request))
        admission = await self._admit(tenant_id, validated)
        send_time = request.send_time.ToDatetime(tzinfo=UTC) if request.HasField("send_time") else None
        scheduled = send_time is not None and send_time > now
        message_id = uuid.uuid4()
        ctx = EventContext(
            tenant_id=tenant_id,
            message_id=str(message_id),
            stream=validated.stream,
            tags=tuple(request.tags),
            metadata=dict(request.metadata),
        )
        recipients: list[tuple[str, int, str]] = []
        events: list[bus_pb2.EventEnvelope] = []
        for position, ((address, kind), decision) in enumerate(
            zip(validated.recipients, admission.decisions, strict=True)
        ):
            if decision == policy_service_pb2.DECISION_SUPPRESS:
                state, event_type = "suppressed", event_pb2.EVENT_TYPE_SUPPRESSED
            elif scheduled:
                state, event_type = "scheduled", event_pb2.EVENT_TYPE_SCHEDULED
            else:
                state, event_type = "accepted", event_pb2.EVENT_TYPE_ACCEPTED
            recipients.append((address, kind, state))
            events.append(new_event(ctx, event_type, address, discriminator=str(position), when=now))
        admitted = any(state != "suppressed" for _, _, state in recipients)
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
            # When the router's sweeper should step in if the route task never arrives.
            route_due_time=send_time if scheduled and send_time else now + self._stall,
            state="accepted" if admitted else "done",
            recipients=recipients,
            template_versions=template_versions,
            sandbox=admission.sandbox or request.sandbox,
        )
        stored_id = await self._store.accept(new, events)
        if stored_id is None:
            # A concurrent call with the same key won the insert; answer as a replay.
            assert key is not None
            existing = await self._store.find_by_idempotency_key(tenant_id, key)
            if existing is None:
                raise AlreadyExists("idempotency key in use", field="idempotency_key")
            return self._replay(existing, request_hash)

        # The commit above is what makes the message durable; from here a failed publish is
        # repaired by the sweepers (router's for the task, events' for the outbox), so the caller
        # gets its id within the publish budget whatever NATS does.
        await self._publish_after_commit(stored_id, events, route=admitted and not scheduled)
        response = mail_service_pb2.SendEmailResponse(message_id=stored_id)
        for address, kind, state in recipients:
            response.recipients.add(address=address, kind=kind, state=RecipientState(state).proto)  # type: ignore[arg-type]
        return response

    async def _publish_after_commit(
        self, stored_id: str, events: Sequence[bus_pb2.EventEnvelope], *, route: bool
    ) -> None:
        async def publish_route() -> None:
            try:
                await self._bus.publish(
                    ROUTE_SUBJECT,
                    bus_pb2.RouteTask(message_id=stored_id).SerializeToString(),
                    msg_id=f"{stored_id}:route",
                )
            except Exception as exc:
                _log.warning("route publish for %s left to the sweeper: %s", stored_id, type(exc).__name__)

        publishes = [publish_events(self._bus, events)]
        if route:
            publishes.append(publish_route())
        # Not cancelled at the budget: a NATS that is merely slow still gets the task (each
        # publish ends at its own time-out), and the sweepers cover one that is away.
        task = asyncio.ensure_future(asyncio.gather(*publishes))
        self._publishing.add(task)
        task.add_done_callback(self._publishing.discard)
        done, _ = await asyncio.wait({task}, timeout=self._publish_budget)
        if not done:
            _log.warning("publishes for %s left to finish late or to the sweepers", stored_id)

    async def _admit(
        self, tenant_id: str, validated: ValidatedSend
    ) -> policy_service_pb2.AdmitMessageResponse:
        try:
            return await self._policy.AdmitMessage(
                policy_service_pb2.AdmitMessageRequest(
                    tenant_id=tenant_id,
                    stream=validated.stream,
                    recipients=[a for a, _ in validated.recipients],
                    unsubscribe_group=validated.request.unsubscribe_group,
                    from_domain=to_ascii_address(getattr(validated.request, "from").address)
                    .rpartition("@")[2]
                    .lower(),
                ),
                timeout=5,
                wait_for_ready=True,
            )
        except grpc.aio.AioRpcError as exc:
            # Fail closed: without an answer from policy nothing is admitted.
            raise error_from_rpc(exc, what="policy service") from None

    async def _check_template(
        self, tenant_id: str, request: mail_service_pb2.SendEmailRequest
    ) -> Sequence[template_pb2.TemplateVersionUsed]:
        """Render once now, so a template that cannot render for these variables is the caller's
        error rather than a FAILED event later; then pin the exact version that rendered, so the
        router builds what was checked even if the template changes in between."""
        ref = request.template
        try:
            rendered = await self._render.RenderMessage(
                render_request(tenant_id, ref),
                timeout=10,
                wait_for_ready=True,
            )
        except grpc.aio.AioRpcError as exc:
            error = error_from_rpc(exc, what="template service")
            if isinstance(error, InvalidArgument):
                # The template service names fields relative to the template; place them in the request.
                error = InvalidArgument(
                    [(f if f.startswith("template") else f"template.{f}", d) for f, d in error.violations]
                )
            raise error from None
        ref.id = rendered.template_id
        ref.name = ""
        ref.version = rendered.version
        return rendered.template_versions

    def _replay(self, existing: MessageRow, request_hash: bytes) -> mail_service_pb2.SendEmailResponse:
        if existing.request_hash != request_hash:
            raise AlreadyExists(
                "this idempotency key was already used with a different request",
                field="idempotency_key",
                existing_id=existing.id,
            )
        return mail_service_pb2.SendEmailResponse(
            message_id=existing.id, recipients=_recipient_statuses(existing)
        )

    async def GetMessage(
        self, request: mail_service_pb2.GetMessageRequest, context: grpc.aio.ServicerContext
    ) -> mail_service_pb2.GetMessageResponse:
        caller = await self._keys.resolve(context)
        caller.require("messages:read")
        if not request.message_id:
            raise InvalidArgument([("message_id", "a message id is required")])
        row = await self._store.get(caller.tenant_id, request.message_id)
        if row is None:
            raise NotFound(f"message '{request.message_id}' not found")
        stored = mail_service_pb2.SendEmailRequest.FromString(row.request)
        message = message_pb2.Message(
            id=row.id,
            stream=row.stream,
            subject=stored.subject,
            tags=list(stored.tags),
            metadata=dict(stored.metadata),
            recipients=_recipient_statuses(row),
            rfc822_message_id=row.rfc822_message_id or "",
            template_versions=versions_from_json(row.template_versions),
            sandbox=row.sandbox,
        )
        getattr(message, "from").CopyFrom(getattr(stored, "from"))
        message.create_time.FromDatetime(row.create_time)
        if row.send_time is not None:
            message.send_time.FromDatetime(row.send_time)
        timeline = await read_timeline(self._events, tenant_id=caller.tenant_id, message_id=row.id)
        response = mail_service_pb2.GetMessageResponse(message=message, timeline=timeline)
        response.read_time.GetCurrentTime()
        return response

    async def SendBatch(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        bearer_token(context)
        raise Unimplemented("SendBatch is not built yet; call SendEmail per message")
