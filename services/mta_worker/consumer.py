"""The delivery step: lease the due recipients, run one SMTP transaction, record each outcome."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from datetime import UTC, datetime, timedelta

from nats.aio.msg import Msg
from postwire.internal.v1 import bus_pb2
from postwire.v1 import event_pb2, message_pb2

from libs.bus import DELIVER_SUBJECT, Bus, Publication
from libs.bus import Outcome as BusOutcome
from libs.event_outbox import EventContext, new_event, publish_events
from libs.mail.addresses import to_ascii_address
from libs.telemetry import tracer
from services.mta_worker.retry_schedule import RetryPolicy
from services.mta_worker.smtp_delivery import Relay, send_transaction
from services.mta_worker.smtp_outcome import Reply, Verdict, classify
from services.mta_worker.store import Claim, Outcome, WorkerStore

__all__ = ["Worker"]

_log = logging.getLogger(__name__)
# Recipients one retry-scheduler query claims; a sweep repeats the query while claims come back full.
SWEEP_CLAIM = 500
# What a sandboxed recipient "receives": a success that says plainly nothing left.
SANDBOX_REPLY = Reply(code=250, enhanced="2.0.0", text="sandbox: accepted by Postwire, not delivered")


class Worker:
    def __init__(
        self,
        store: WorkerStore,
        bus: Bus,
        relay: Relay,
        retry: RetryPolicy,
        *,
        ack_wait: float,
        stall: timedelta,
    ) -> None:
        self._store = store
        self._bus = bus
        self._relay = relay
        self._retry = retry
        # The lease matches AckWait: both expire together if this worker dies mid-send.
        self._lease = timedelta(seconds=ack_wait)
        self._heartbeat = ack_wait / 3
        self._stall = stall

    async def handle(self, msg: Msg) -> BusOutcome:
        task = bus_pb2.DeliveryTask.FromString(msg.data)
        claim = await self._store.claim(task.message_id, lease=self._lease)
        if claim is None:
            return BusOutcome.ACK  # nothing queued: already done, or another worker holds it
        if claim.sandbox:
            # Everything up to here ran for real; only the SMTP transaction is left out.
            await self._record(claim, {to_ascii_address(r.address): SANDBOX_REPLY for r in claim.recipients})
            return BusOutcome.ACK
        beat = asyncio.create_task(self._keep_alive(msg, claim))
        try:
            with tracer().start_as_current_span("smtp transaction") as span:
                span.set_attribute("server.address", self._relay.host)
                span.set_attribute("server.port", self._relay.port)
                span.set_attribute("postwire.recipients", len(claim.recipients))
                # IDN domains go out as A-labels, so SMTPUTF8 is needed only for non-ASCII local parts.
                addresses = [to_ascii_address(r.address) for r in claim.recipients]
                replies = await send_transaction(
                    self._relay,
                    envelope_from=claim.envelope_from,
                    recipients=addresses,
                    data=claim.mime,
                    smtputf8=not all(a.isascii() for a in [*addresses, claim.envelope_from]),
                )
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
        await self._record(claim, replies)
        return BusOutcome.ACK

    async def _keep_alive(self, msg: Msg, claim: Claim) -> None:
        """Tell JetStream and PostgreSQL we are still working, so no second worker starts a
        parallel send while a slow server takes its time (RELIABILITY finding 3)."""
        positions = [r.position for r in claim.recipients]
        while True:
            await asyncio.sleep(self._heartbeat)
            try:
                await msg.in_progress()
                await self._store.renew(claim.message_id, positions, lease=self._lease)
            except Exception as exc:
                _log.warning("heartbeat for %s failed: %s", claim.message_id, type(exc).__name__)

    async def _record(self, claim: Claim, replies: dict[str, Reply]) -> None:
        now = datetime.now(UTC)
        ctx = EventContext(
            claim.tenant_id, claim.message_id, claim.stream, claim.tags, json.loads(claim.metadata)
        )
        outcomes: list[Outcome] = []
        events: list[bus_pb2.EventEnvelope] = []
        for recipient in claim.recipients:
            reply = replies[to_ascii_address(recipient.address)]
            verdict = classify(reply)
            attempt = recipient.attempts + 1
            first = recipient.first_attempt_time or now
            next_time: datetime | None = None
            if verdict is Verdict.DELIVERED:
                state, event_type, reason = "delivered", event_pb2.EVENT_TYPE_DELIVERED, ""
                if claim.sandbox:
                    reason = "sandbox: nothing was sent to the recipient"
            elif verdict is Verdict.BOUNCED:
                state, event_type, reason = "bounced", event_pb2.EVENT_TYPE_BOUNCED, ""
            elif self._retry.expired(first, now):
                state, event_type, reason = "expired", event_pb2.EVENT_TYPE_EXPIRED, "retries exhausted"
            else:
                state, event_type, reason = "deferred", event_pb2.EVENT_TYPE_DEFERRED, ""
                next_time = now + timedelta(seconds=self._retry.delay(attempt))
            outcomes.append(
                Outcome(recipient.position, state, first, next_time, reply.code, reply.enhanced, reply.text)
            )
            events.append(
                new_event(
                    ctx,
                    event_type,
                    recipient.address,
                    discriminator=f"{recipient.position}:{attempt}",
                    smtp_reply=message_pb2.SmtpReply(
                        code=reply.code, enhanced_code=reply.enhanced, text=reply.text
                    ),
                    attempt=attempt,
                    next_attempt_time=next_time,
                    reason=reason,
                    when=now,
                )
            )
        await self._store.record(claim.message_id, outcomes, events)
        await publish_events(self._bus, events)

    async def sweep(self) -> int:
        """Re-publish every due message, batch after batch, pipelined (libs.bus.publish_many)."""
        total = 0
        while True:
            ids = await self._store.claim_due(stall=self._stall, limit=SWEEP_CLAIM)
            stamp = f"{datetime.now(UTC).timestamp():.0f}"
            total += await self._bus.publish_many(
                [
                    Publication(
                        DELIVER_SUBJECT,
                        bus_pb2.DeliveryTask(message_id=message_id).SerializeToString(),
                        msg_id=f"{message_id}:deliver:{stamp}",
                    )
                    for message_id in ids
                ]
            )
            # claim_due limits recipients, not messages: a short list of ids may still be a full claim.
            if len(ids) < SWEEP_CLAIM // 2:
                return total
