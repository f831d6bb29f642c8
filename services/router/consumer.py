"""The routing step: render (if templated), build MIME, store it, queue delivery."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta

import grpc
from nats.aio.msg import Msg
from postwire.internal.v1 import bus_pb2, render_service_pb2_grpc
from postwire.v1 import mail_service_pb2

from libs.bus import DELIVER_SUBJECT, ROUTE_SUBJECT, Bus, Outcome, Publication
from libs.errors import Unavailable
from libs.event_outbox import EventContext, new_event, publish_events
from libs.mail.parts import Parts
from libs.render_request import render_request, versions_from_json
from libs.stage_retry import StageRetry
from services.router.mime import build_mime
from services.router.routing_steps import (
    GiveUp,
    Retry,
    Step,
    after_failure,
    after_outage,
    ending,
    first_step,
    give_up_start,
    unrouted,
)
from services.router.store import RouteRow, RouterStore

__all__ = ["Router"]

_log = logging.getLogger(__name__)
# Errors that mean "this template will never render for this message", as opposed to an outage.
_PERMANENT = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
}
# A message still unrouted at its give-up time was held up by something being away (NATS, the
# template service, PostgreSQL, every router): counted failures give up within minutes. So one
# reason serves both the check before rendering and an outage met while rendering.
EXPIRED_REASON = "router: a dependency was unavailable until the give-up time"
# Rows one sweep query claims; a sweep repeats the query until a claim comes back short.
SWEEP_CLAIM = 500
# The template service is away or shedding load: an outage, never the message's fault.
_OUTAGE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.CANCELLED,
}


class Router:
    def __init__(
        self,
        store: RouterStore,
        bus: Bus,
        render: render_service_pb2_grpc.RenderServiceAsyncStub,
        *,
        hostname: str,
        stall: timedelta,
        retry: StageRetry | None = None,
        lease: timedelta = timedelta(seconds=30),
    ) -> None:
        self._store = store
        self._bus = bus
        self._render = render
        self._hostname = hostname
        self._stall = stall
        self._retry = retry or StageRetry()
        # The consumer's AckWait: while a replica routes a message, JetStream (not the sweeper)
        # brings it back if that replica dies.
        self._lease = lease
        # A render must end well inside the lease, or JetStream and the sweeper would hand the
        # same message to a second router while the first still waits (say, on a template service
        # that is down: wait_for_ready blocks for the whole time-out).
        self._render_timeout = min(10.0, lease.total_seconds() / 2)

    async def handle(self, msg: Msg) -> Outcome:
        task = bus_pb2.RouteTask.FromString(msg.data)
        return await self.route(task.message_id)

    async def route(self, message_id: str) -> Outcome:
        row = await self._store.load(message_id, lease=self._lease)
        # Consumers are idempotent against PostgreSQL: a second copy of the task finds the row
        # already routed (None) and does nothing.
        if row is None:
            return Outcome.ACK
        now = datetime.now(UTC)
        step = first_step(
            row.state, create_time=row.create_time, send_time=row.send_time, now=now, retry=self._retry
        )
        if step is Step.EXPIRE:
            await self._give_up(row, EXPIRED_REASON, expired=True)
        if step is not Step.ROUTE:
            return Outcome.ACK
        request = mail_service_pb2.SendEmailRequest.FromString(row.request)
        content = Parts(subject=request.subject, html_body=request.html_body, text_body=request.text_body)
        if request.HasField("template") and row.rendered_parts is not None:
            # Rendered when accepted, with the versions pinned then: no second render.
            stored = json.loads(row.rendered_parts)
            content = Parts(
                subject=request.subject or stored["subject"],
                html_body=stored["html_body"],
                text_body=stored["text_body"],
            )
        elif request.HasField("template"):
            ref = request.template
            try:
                rendered = await self._render.RenderMessage(
                    render_request(row.tenant_id, ref, versions_from_json(row.template_versions)),
                    timeout=self._render_timeout,
                    wait_for_ready=True,
                )
            except grpc.aio.AioRpcError as exc:
                if exc.code() in _PERMANENT:
                    await self._give_up(row, f"template could not be rendered: {exc.details()}")
                    return Outcome.ACK
                if exc.code() in _OUTAGE:
                    # Retried without counting until the message's give-up time; never bounced.
                    raise Unavailable(f"template service unavailable ({exc.code().name})") from exc
                raise  # the template service failed on this message: counts as an attempt
            content = Parts(
                subject=request.subject or rendered.subject,
                html_body=rendered.html_body,
                text_body=rendered.text_body,
            )
        built = build_mime(request, content, message_id=row.id, hostname=self._hostname, now=now)
        routed = await self._store.mark_routed(
            row.id,
            mime=built.data,
            envelope_from=built.envelope_from,
            rfc822_id=built.rfc822_message_id,
            stall=self._stall,
        )
        if routed:
            # Unconfirmed: the routed row and its queued recipients are already committed, and
            # the worker's scheduler re-publishes them after the stall whether this publish or
            # its PubAck is lost (a failed confirmed publish left them to it too).
            await self._bus.publish(
                DELIVER_SUBJECT,
                bus_pb2.DeliveryTask(message_id=row.id).SerializeToString(),
                msg_id=f"{row.id}:deliver",
                confirmed=False,
            )
        return Outcome.ACK

    async def _give_up(self, row: RouteRow, reason: str, *, expired: bool = False) -> None:
        ctx = EventContext(row.tenant_id, row.id, row.stream, row.tags, json.loads(row.metadata))
        end = ending(expired=expired)
        events = [
            new_event(ctx, end.event, address, discriminator=str(position), reason=reason[:512])
            for position, address in unrouted(row.recipients)
        ]
        if await self._store.mark_failed(row.id, events, reason=reason[:512], expired=expired):
            await publish_events(self._bus, events)

    # libs.bus.StageFailures: the attempt count lives in messages.route_failures, because the
    # sweeper's re-publish gets a fresh JetStream id (and delivery count).

    async def unavailable(self, msg: Msg, delay: float) -> float | None:
        message_id = _task_id(msg)
        if message_id is None:
            return None
        times = await self._store.times(message_id)
        if times is None:
            return None  # routed or given up meanwhile
        start = give_up_start(create_time=times[0], send_time=times[1])
        return await self._settle(
            message_id,
            after_outage(start, delay, now=datetime.now(UTC), retry=self._retry),
            EXPIRED_REASON,
        )

    async def failed(self, msg: Msg, reason: str) -> float | None:
        message_id = _task_id(msg)
        if message_id is None:
            return None
        attempts = await self._store.count_failure(message_id)
        if attempts is None:
            return None
        return await self._settle(message_id, after_failure(attempts, retry=self._retry), reason)

    async def _settle(self, message_id: str, decision: Retry | GiveUp, reason: str) -> float | None:
        if isinstance(decision, GiveUp):
            row = await self._store.load(message_id)
            if row is not None:
                await self._give_up(row, reason, expired=decision.expired)
            return None
        await self._store.defer(message_id, until=timedelta(seconds=decision.delay) + self._stall)
        return decision.delay

    async def sweep(self) -> int:
        """Re-publish every stalled message, batch after batch, so a wiped stream's backlog comes
        back in one sweep rather than one claim-sized batch per interval."""
        total = 0
        while True:
            ids = await self._store.claim_stalled(stall=self._stall, limit=SWEEP_CLAIM)
            # A fresh id per sweep: the original may still sit in the dedupe window.
            stamp = f"{datetime.now(UTC).timestamp():.0f}"
            total += await self._bus.publish_many(
                [
                    Publication(
                        ROUTE_SUBJECT,
                        bus_pb2.RouteTask(message_id=message_id).SerializeToString(),
                        msg_id=f"{message_id}:route:{stamp}",
                    )
                    for message_id in ids
                ]
            )
            if len(ids) < SWEEP_CLAIM:
                return total


def _task_id(msg: Msg) -> str | None:
    """The task's message id; None for a payload that can never be processed (term it)."""
    try:
        message_id = bus_pb2.RouteTask.FromString(msg.data).message_id
    except Exception:
        _log.error("undecodable route task dropped")
        return None
    return message_id or None
