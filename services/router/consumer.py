"""The routing step: render (if templated), build MIME, store it, queue delivery."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta

import grpc
from nats.aio.msg import Msg
from postwire.internal.v1 import bus_pb2, render_service_pb2_grpc
from postwire.v1 import event_pb2, mail_service_pb2

from libs.bus import DELIVER_SUBJECT, ROUTE_SUBJECT, Bus, Outcome
from libs.event_outbox import EventContext, new_event, publish_events
from libs.render_request import render_request, versions_from_json
from services.router.mime import Content, build_mime
from services.router.store import RouteRow, RouterStore

__all__ = ["Router"]

_log = logging.getLogger(__name__)
# Errors that mean "this template will never render for this message", as opposed to an outage.
_PERMANENT = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
}


class Router:
    def __init__(
        self,
        store: RouterStore,
        bus: Bus,
        render: render_service_pb2_grpc.RenderServiceStub,
        *,
        hostname: str,
        stall: timedelta,
    ) -> None:
        self._store = store
        self._bus = bus
        self._render = render
        self._hostname = hostname
        self._stall = stall

    async def handle(self, msg: Msg) -> Outcome:
        task = bus_pb2.RouteTask.FromString(msg.data)
        return await self.route(task.message_id)

    async def route(self, message_id: str) -> Outcome:
        row = await self._store.load(message_id)
        now = datetime.now(UTC)
        # Consumers are idempotent against PostgreSQL: a second copy of the task finds the row
        # already routed and does nothing.
        if row is None or row.state != "accepted":
            return Outcome.ACK
        if row.send_time is not None and row.send_time > now:
            return Outcome.ACK  # scheduled; the sweeper brings it back when due
        request = mail_service_pb2.SendEmailRequest.FromString(row.request)
        content = Content(request.subject, request.text_body, request.html_body)
        if request.HasField("template"):
            ref = request.template
            try:
                rendered = await self._render.RenderMessage(
                    render_request(row.tenant_id, ref, versions_from_json(row.template_versions)),
                    timeout=10,
                    wait_for_ready=True,
                )
            except grpc.aio.AioRpcError as exc:
                if exc.code() in _PERMANENT:
                    await self._fail(row.id, row, f"template could not be rendered: {exc.details()}")
                    return Outcome.ACK
                # Template service away: try again shortly; the message is deferred, never bounced.
                _log.warning("render of %s failed with %s; retrying", row.id, exc.code().name)
                return Outcome.RETRY
            content = Content(request.subject or rendered.subject, rendered.text_body, rendered.html_body)
        built = build_mime(request, content, message_id=row.id, hostname=self._hostname, now=now)
        routed = await self._store.mark_routed(
            row.id,
            mime=built.data,
            envelope_from=built.envelope_from,
            rfc822_id=built.rfc822_message_id,
            stall=self._stall,
        )
        if routed:
            await self._bus.publish(
                DELIVER_SUBJECT,
                bus_pb2.DeliveryTask(message_id=row.id).SerializeToString(),
                msg_id=f"{row.id}:deliver",
            )
        return Outcome.ACK

    async def _fail(self, message_id: str, row: RouteRow, reason: str) -> None:
        ctx = EventContext(row.tenant_id, row.id, row.stream, row.tags, json.loads(row.metadata))
        events = [
            new_event(
                ctx, event_pb2.EVENT_TYPE_FAILED, address, discriminator=str(position), reason=reason[:512]
            )
            for position, address, state in row.recipients
            if state in ("accepted", "scheduled")
        ]
        if await self._store.mark_failed(message_id, events):
            await publish_events(self._bus, events)

    async def sweep(self) -> int:
        ids = await self._store.claim_stalled(stall=self._stall)
        for message_id in ids:
            await self._bus.publish(
                ROUTE_SUBJECT,
                bus_pb2.RouteTask(message_id=message_id).SerializeToString(),
                # A fresh id per sweep: the original may still sit in the dedupe window.
                msg_id=f"{message_id}:route:{datetime.now(UTC).timestamp():.0f}",
            )
        return len(ids)
