"""The delivery step: lease the due recipients, run one SMTP transaction, record each outcome as
its reply arrives.

Shutdown (RELIABILITY R22, issue 9 item 3): once `begin_shutdown` is called no new transaction
starts; when the grace runs out a transaction that has not written its final "." is abandoned
(nothing delivered, its recipients handed back without counting an attempt), and one still
waiting for the reply to its "." gives up on it, logged as "may be delivered twice".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from nats.aio.msg import Msg
from postwire.internal.v1 import bus_pb2
from postwire.v1 import event_pb2, message_pb2

from libs.bus import DELIVER_SUBJECT, RETRY_SUBJECT, Bus, Publication
from libs.bus import Outcome as BusOutcome
from libs.errors import Unavailable
from libs.event_outbox import EventContext, new_event
from libs.mail.addresses import to_ascii_address
from libs.telemetry import tracer
from services.mta_worker.destinations import DestinationSlots, destination
from services.mta_worker.recorder import Recorder
from services.mta_worker.retry_schedule import RetryPolicy
from services.mta_worker.smtp_delivery import Relay, Transaction, lost_reply
from services.mta_worker.smtp_outcome import Reply, Verdict, classify
from services.mta_worker.store import Claim, ClaimedRecipient, Outcome, WorkerStore

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
        recorder: Recorder,
        *,
        ack_wait: float,
        stall: timedelta,
        slots_per_destination: int,
    ) -> None:
        self._store = store
        self._bus = bus
        self._relay = relay
        self._retry = retry
        self._recorder = recorder
        # The lease matches AckWait: both expire together if this worker dies mid-send.
        self._lease = timedelta(seconds=ack_wait)
        self._heartbeat = ack_wait / 3
        self._stall = stall
        self._stopping = False
        self._abort = asyncio.Event()
        self._slots = DestinationSlots(slots_per_destination, max_wait=retry.max_seconds)

    def begin_shutdown(self, grace: float) -> None:
        """Start no new transaction; abandon or give up on open ones `grace` seconds from now."""
        if self._stopping:
            return
        self._stopping = True
        asyncio.get_running_loop().call_later(grace, self._abort.set)

    async def handle(self, msg: Msg) -> BusOutcome:
        task = bus_pb2.DeliveryTask.FromString(msg.data)
        if self._stopping or self._recorder.pending(task.message_id):
            # Not now: after a restart or on another replica (JetStream redelivers it). An outcome
            # of this message is still being committed, so claiming it again could send it twice.
            # Raised as "unavailable" so the bus naks it without counting an attempt.
            raise Unavailable("mta_worker is stopping" if self._stopping else "an outcome is being recorded")
        claim = await self._store.claim(task.message_id, lease=self._lease)
        if claim is None:
            return BusOutcome.ACK  # nothing queued: already done, or another worker holds it
        if claim.sandbox:
            # Everything up to here ran for real; only the SMTP transaction is left out.
            await self._on_reply(
                claim, [to_ascii_address(r.address) for r in claim.recipients], SANDBOX_REPLY
            )
            return BusOutcome.ACK
        positions = [r.position for r in claim.recipients]
        if self._stopping:
            await self._store.release(claim.message_id, positions)
            return BusOutcome.ACK
        destinations = {destination(to_ascii_address(r.address)) for r in claim.recipients}
        if not self._slots.take(destinations):
            # This destination already holds its share of slots (slow, or just busy): try again
            # later through the retry lane rather than wait here in a slot other mail could use.
            delay = timedelta(seconds=self._slots.wait_hint(destinations) * random.uniform(0.8, 1.2))
            await self._store.postpone(claim.message_id, positions, delay=delay)
            _log.info("%s postponed: its destination holds all its slots", claim.message_id)
            return BusOutcome.ACK
        started = time.monotonic()
        beat = asyncio.create_task(self._keep_alive(msg, claim))
        try:
            with tracer().start_as_current_span("smtp transaction") as span:
                span.set_attribute("server.address", self._relay.host)
                span.set_attribute("server.port", self._relay.port)
                span.set_attribute("postwire.recipients", len(claim.recipients))
                await self._transact(claim)
        finally:
            self._slots.give_back(destinations, took=time.monotonic() - started)
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
        return BusOutcome.ACK

    async def _transact(self, claim: Claim) -> None:
        # IDN domains go out as A-labels, so SMTPUTF8 is needed only for non-ASCII local parts.
        addresses = [to_ascii_address(r.address) for r in claim.recipients]

        async def on_reply(recipients: Sequence[str], reply: Reply) -> None:
            await self._on_reply(claim, recipients, reply)

        transaction = Transaction(
            self._relay,
            envelope_from=claim.envelope_from,
            recipients=addresses,
            data=claim.mime,
            smtputf8=not all(a.isascii() for a in [*addresses, claim.envelope_from]),
            on_reply=on_reply,
        )
        run = asyncio.create_task(transaction.run())
        abort = asyncio.create_task(self._abort.wait())
        try:
            await asyncio.wait({run, abort}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            abort.cancel()
        if run.done():
            run.result()
            return
        run.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await run
        left = transaction.unreported
        if not left:
            return
        if transaction.past_final_dot:
            _log.warning(
                "shutdown: no reply to the final '.' of %s within the grace: may be delivered twice",
                claim.message_id,
            )
            await self._on_reply(claim, left, lost_reply(TimeoutError()))
        else:
            # The "." was never written, so the relay has nothing to deliver: not an attempt.
            positions = [r.position for r in claim.recipients if to_ascii_address(r.address) in set(left)]
            await self._store.release(claim.message_id, positions)
            _log.info("shutdown: handed back %s before its final '.'", claim.message_id)

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

    async def _on_reply(self, claim: Claim, addresses: Sequence[str], reply: Reply) -> None:
        """Make the outcome of `addresses` durable now, before the session goes on."""
        now = datetime.now(UTC)
        ctx = EventContext(
            claim.tenant_id, claim.message_id, claim.stream, claim.tags, json.loads(claim.metadata)
        )
        wanted = set(addresses)
        outcomes: list[Outcome] = []
        events: list[bus_pb2.EventEnvelope] = []
        for recipient in claim.recipients:
            if to_ascii_address(recipient.address) not in wanted:
                continue
            outcome, event = self._outcome(claim, ctx, recipient, reply, now)
            outcomes.append(outcome)
            events.append(event)
        await self._recorder.record(outcomes, events)

    def _outcome(
        self, claim: Claim, ctx: EventContext, recipient: ClaimedRecipient, reply: Reply, now: datetime
    ) -> tuple[Outcome, bus_pb2.EventEnvelope]:
        classification = classify(reply)
        verdict = classification.verdict
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
            if reply.after_final_dot:
                delay = self._retry.delay_after_lost_reply(attempt)
            else:
                delay = self._retry.delay(attempt)
            next_time = now + timedelta(seconds=delay)
        outcome = Outcome(
            claim.message_id,
            recipient.position,
            state,
            first,
            next_time,
            reply.code,
            reply.enhanced,
            reply.text,
        )
        event = new_event(
            ctx,
            event_type,
            recipient.address,
            discriminator=f"{recipient.position}:{attempt}",
            smtp_reply=message_pb2.SmtpReply(code=reply.code, enhanced_code=reply.enhanced, text=reply.text),
            attempt=attempt,
            next_attempt_time=next_time,
            reason=reason,
            when=now,
            bounce_category=classification.category if state in ("deferred", "bounced") else 0,
        )
        return outcome, event

    async def sweep(self) -> int:
        """Re-publish every due message, batch after batch, pipelined (libs.bus.publish_many).
        Retries have a lane (subject and consumer) of their own, so a destination that defers
        everything cannot queue its retries ahead of new mail."""
        total = 0
        while True:
            due = await self._store.claim_due(stall=self._stall, limit=SWEEP_CLAIM)
            stamp = f"{datetime.now(UTC).timestamp():.0f}"
            publications = []
            for message_id, retry in due:
                subject, lane = (RETRY_SUBJECT, "retry") if retry else (DELIVER_SUBJECT, "deliver")
                publications.append(
                    Publication(
                        subject,
                        bus_pb2.DeliveryTask(message_id=message_id).SerializeToString(),
                        msg_id=f"{message_id}:{lane}:{stamp}",
                    )
                )
            total += await self._bus.publish_many(publications)
            # claim_due limits recipients, not messages: a short list of ids may still be a full claim.
            if len(due) < SWEEP_CLAIM // 2:
                return total
