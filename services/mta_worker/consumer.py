"""The delivery step: lease the due recipients, route each destination (MX or relay), run one
SMTP transaction per recipient on reused connections, record each outcome as its reply arrives.

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
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

from nats.aio.msg import Msg
from postwire.internal.v1 import bus_pb2
from postwire.v1 import message_pb2

from libs.bus import DELIVER_SUBJECT, RETRY_SUBJECT, Bus, NotNow, Publication
from libs.bus import Outcome as BusOutcome
from libs.domain_keys import DomainKeyReader, KeyUnreadable
from libs.errors import Unavailable
from libs.event_outbox import EventContext, new_event
from libs.failures import dependency_failure
from libs.mail import dkim
from libs.mail.addresses import to_ascii_address
from libs.mail.smtp_outcome import Classification, Reply, Verdict, classify
from libs.return_path import ReturnPathConfig, ReturnPathTokens, envelope_from, feedback_headers
from libs.runtime import log_fields
from libs.telemetry import tracer
from services.mta_worker.attempt_outcome import judge
from services.mta_worker.connection_pool import ConnectionPool
from services.mta_worker.delivery import Letter, RecipientDelivery
from services.mta_worker.destinations import DestinationSlots, destination
from services.mta_worker.endpoints import Endpoints
from services.mta_worker.mx_lookup import MxFailure, MxResolver
from services.mta_worker.recorder import Recorder
from services.mta_worker.retry_schedule import RetryPolicy
from services.mta_worker.routes import MxRoute, RoutingRules, route
from services.mta_worker.smtp_session import Timeouts, TlsMode, lost_reply
from services.mta_worker.store import Claim, ClaimedRecipient, Outcome, WorkerStore

__all__ = ["Delivery", "Worker"]

_log = logging.getLogger(__name__)
# Recipients one retry-scheduler query claims; a sweep repeats the query while claims come back full.
SWEEP_CLAIM = 500
# What a sandboxed recipient "receives": a success that says plainly nothing left.
SANDBOX_REPLY = Reply(code=250, enhanced="2.0.0", text="sandbox: accepted by Postwire, not delivered")


class Delivery:
    """What the worker needs to put a recipient's message on the wire: where to (routes, MX,
    endpoints, idle connections), as whom (DKIM keys, return-path tokens) and how (time-outs)."""

    def __init__(
        self,
        *,
        rules: RoutingRules,
        resolver: MxResolver,
        endpoints: Endpoints,
        pool: ConnectionPool,
        keys: DomainKeyReader,
        tokens: ReturnPathTokens,
        return_path: ReturnPathConfig,
        tls_required_domains: frozenset[str],
        relay_tls: TlsMode,
        timeouts: Timeouts,
        helo_name: str,
    ) -> None:
        self.rules = rules
        self.resolver = resolver
        self.endpoints = endpoints
        self.pool = pool
        self.keys = keys
        self.tokens = tokens
        self.return_path = return_path
        self.tls_required_domains = tls_required_domains
        self.relay_tls = relay_tls
        self.timeouts = timeouts
        self.helo_name = helo_name


class Worker:
    def __init__(
        self,
        store: WorkerStore,
        bus: Bus,
        delivery: Delivery,
        retry: RetryPolicy,
        recorder: Recorder,
        *,
        ack_wait: float,
        stall: timedelta,
        slots_per_destination: int,
    ) -> None:
        self._store = store
        self._bus = bus
        self._delivery = delivery
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
        # Messages waiting for a slot give up now: they are handed back below, not started.
        self._slots.stop_waiting()
        asyncio.get_running_loop().call_later(grace, self._abort.set)

    def stopping(self) -> bool:
        """Read afresh after every await: begin_shutdown may have run meanwhile."""
        return self._stopping

    async def handle(self, msg: Msg) -> BusOutcome:
        task = bus_pb2.DeliveryTask.FromString(msg.data)
        if self._stopping or self._recorder.pending(task.message_id):
            # Not now: after a restart or on another replica (JetStream redelivers it). An outcome
            # of this message is still being committed, so claiming it again could send it twice,
            # and giving it up (as an outage past the give-up time would) could overwrite it.
            raise NotNow("mta_worker is stopping" if self._stopping else "an outcome is being recorded")
        claim = await self._store.claim(task.message_id, lease=self._lease)
        if claim is None:
            return BusOutcome.ACK  # nothing queued: already done, or another worker holds it
        if claim.sandbox:
            # Everything up to here ran for real; only the SMTP transaction is left out.
            await self._on_reply(claim, claim.recipients, SANDBOX_REPLY)
            return BusOutcome.ACK
        positions = [r.position for r in claim.recipients]
        if self.stopping():
            await self._store.release(claim.message_id, positions)
            return BusOutcome.ACK
        groups: dict[str, list[ClaimedRecipient]] = {}
        for recipient in claim.recipients:
            groups.setdefault(destination(to_ascii_address(recipient.address)), []).append(recipient)
        # Waiting is bounded by the heartbeat period: the lease taken with the claim is renewed
        # only once the heartbeat below runs, so it must still have two thirds to go by then.
        taken = await self._slots.take_soon(groups, longest=self._heartbeat)
        if self.stopping():
            # Shutdown began while this waited for a slot: start nothing new.
            if taken:
                self._slots.give_back(groups, took=None)
            await self._store.release(claim.message_id, positions)
            return BusOutcome.ACK
        if not taken:
            # This destination already holds its share of slots (slow, or busy beyond a short
            # wait): try again later through the retry lane rather than wait here in a slot
            # other mail could use.
            delay = timedelta(seconds=self._slots.wait_hint(groups) * random.uniform(0.8, 1.2))
            await self._store.postpone(claim.message_id, positions, delay=delay)
            _log.info("%s postponed: its destination holds all its slots", claim.message_id)
            return BusOutcome.ACK
        started = time.monotonic()
        deferred = False
        slots_back = False

        def give_slots_back(last_reply: Reply | None = None) -> None:
            # Once, at the message's last reply or at the end, whichever comes first.
            nonlocal slots_back
            if slots_back:
                return
            slots_back = True
            pushed_back = deferred or (
                last_reply is not None and classify(last_reply).verdict is Verdict.DEFERRED
            )
            self._slots.give_back(groups, took=time.monotonic() - started, deferred=pushed_back)

        last_domain = next(reversed(groups))
        # The heartbeat starts only once a transaction outlasts its period: most end well
        # before, and a timer costs less than a task started and cancelled for every message.
        beats: list[asyncio.Task[None]] = []
        timer = asyncio.get_running_loop().call_later(
            self._heartbeat, lambda: beats.append(asyncio.create_task(self._keep_alive(msg, claim)))
        )
        try:
            try:
                keys = await self._delivery.keys.keys_for(claim.tenant_id, _domain(claim.envelope_from))
            except Exception as exc:
                failure = dependency_failure(exc)
                if failure is None and not isinstance(exc, KeyUnreadable):
                    raise
                # The keys cannot be read (PostgreSQL away, or a POSTWIRE_SECRET_KEY that is not
                # policy's): sending unsigned would be worse than sending a little later.
                await self._store.release(claim.message_id, positions)
                why = failure.message if failure is not None else str(exc)
                raise Unavailable(f"DKIM keys unavailable: {why}") from exc
            # The body hash and the message's own headers once, whatever the recipients.
            signer = dkim.MessageSigner(claim.mime, keys)
            for domain, recipients in groups.items():
                if self._abort.is_set():
                    await self._store.release(claim.message_id, [r.position for r in recipients])
                    continue
                with tracer().start_as_current_span("smtp delivery") as span:
                    span.set_attribute("postwire.destination", domain)
                    span.set_attribute("postwire.recipients", len(recipients))
                    sent = give_slots_back if domain == last_domain else None
                    deferred = await self._deliver(claim, domain, recipients, keys, signer, sent) or deferred
        finally:
            give_slots_back()
            timer.cancel()
            for beat in beats:
                beat.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await beat
        return BusOutcome.ACK

    async def _deliver(
        self,
        claim: Claim,
        domain: str,
        recipients: list[ClaimedRecipient],
        keys: tuple[dkim.SigningKey, ...],
        signer: dkim.MessageSigner,
        sent: Callable[[Reply], None] | None = None,
    ) -> bool:
        """Deliver one destination's recipients; True if any reply deferred them."""
        d = self._delivery
        where = route(d.rules, claim.tenant_id, claim.stream, domain)
        # The attempt log's next hop when no server answered (DNS, TLS policy, connect failures).
        via = f"mx:{where.domain}" if isinstance(where, MxRoute) else f"relay:{where.host}:{where.port}"
        # Each transaction's duration runs from the previous one's reply (the first includes DNS
        # and connecting), so the attempt lines of one connection add up to its time.
        since = time.monotonic()
        tls_required = claim.require_tls or domain in d.tls_required_domains
        if isinstance(where, MxRoute):
            answer = await d.resolver.resolve(where.domain)
            if isinstance(answer, MxFailure):
                verdict = Verdict.BOUNCED if answer.permanent else Verdict.DEFERRED
                reply = Reply(answer.code, answer.enhanced, answer.text)
                return await self._on_reply(
                    claim, recipients, reply, Classification(verdict, answer.category), via=via, since=since
                )
            plan = d.endpoints.mx(where.domain, answer, tls_required=tls_required)
        else:
            if tls_required and d.relay_tls is TlsMode.NONE:
                reply = Reply(
                    0, "4.7.10", "TLS is required for this mail but the relay is configured without TLS"
                )
                return await self._on_reply(
                    claim,
                    recipients,
                    reply,
                    Classification(Verdict.DEFERRED, message_pb2.BOUNCE_CATEGORY_CONFIG),
                    via=via,
                    since=since,
                )
            plan = d.endpoints.relay(where)
        deferred = False

        async def report(
            settled: Sequence[ClaimedRecipient],
            reply: Reply,
            classification: Classification | None,
            remote: message_pb2.RemoteServer | None,
        ) -> None:
            nonlocal since, deferred
            if await self._on_reply(claim, settled, reply, classification, remote, via=via, since=since):
                deferred = True
            since = time.monotonic()

        delivery = RecipientDelivery(
            d.pool,
            plan,
            helo_name=d.helo_name,
            timeouts=d.timeouts,
            letter=lambda recipient: self._letter(claim, recipient, signer, verified=bool(keys)),
            report=report,
            sent=sent,
        )
        run = asyncio.create_task(delivery.run(recipients))
        abort = asyncio.create_task(self._abort.wait())
        try:
            await asyncio.wait({run, abort}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            abort.cancel()
        if run.done():
            run.result()
            return deferred
        run.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await run
        left = delivery.unreported(recipients)
        if not left:
            return deferred
        current = delivery.current
        if current is not None and current in left and delivery.past_final_dot:
            _log.warning(
                "shutdown: no reply to the final '.' of %s within the grace: may be delivered twice",
                claim.message_id,
            )
            await self._on_reply(claim, [current], lost_reply(TimeoutError()), via=via, since=since)
            left = [r for r in left if r is not current]
        if left:
            # No "." was written for them, so no server has anything to deliver: not an attempt.
            await self._store.release(claim.message_id, [r.position for r in left])
            _log.info("shutdown: handed back %d recipient(s) of %s", len(left), claim.message_id)
        return deferred

    def _letter(
        self, claim: Claim, recipient: ClaimedRecipient, signer: dkim.MessageSigner, *, verified: bool
    ) -> Letter:
        """The recipient's version: its own return path, signed just now (at every attempt)."""
        d = self._delivery
        token = d.tokens.mint(claim.message_id, recipient.position)
        sender = envelope_from(token, _domain(claim.envelope_from), verified=verified, config=d.return_path)
        # The same token names the recipient in a complaint (ARF reports often carry only the
        # original's headers); Feedback-ID feeds Gmail's feedback loop, per tenant and stream.
        data = signer.sign(feedback_headers(token, tenant_id=claim.tenant_id, stream=claim.stream))
        address = to_ascii_address(recipient.address)
        header_end = data.find(b"\r\n\r\n")
        headers = data if header_end < 0 else data[:header_end]
        # IDN domains go out as A-labels, so SMTPUTF8 is needed only for a non-ASCII local part
        # or RFC 6532 (UTF-8) headers.
        return Letter(sender, address, data, smtputf8=not address.isascii() or not headers.isascii())

    async def _keep_alive(self, msg: Msg, claim: Claim) -> None:
        """Tell JetStream and PostgreSQL we are still working, so no second worker starts a
        parallel send while a slow server takes its time (RELIABILITY finding 3): now (one
        period after the delivery began), then every period."""
        positions = [r.position for r in claim.recipients]
        while True:
            try:
                await msg.in_progress()
                await self._store.renew(claim.message_id, positions, lease=self._lease)
            except Exception as exc:
                _log.warning("heartbeat for %s failed: %s", claim.message_id, type(exc).__name__)
            await asyncio.sleep(self._heartbeat)

    async def _on_reply(
        self,
        claim: Claim,
        recipients: Sequence[ClaimedRecipient],
        reply: Reply,
        classification: Classification | None = None,
        remote: message_pb2.RemoteServer | None = None,
        *,
        via: str = "",
        since: float | None = None,
    ) -> bool:
        """Make the outcome of `recipients` durable now, before the session goes on; True if the
        reply deferred them (the destination is pushing back)."""
        duration_ms = 0 if since is None else round((time.monotonic() - since) * 1000)
        now = datetime.now(UTC)
        ctx = EventContext(
            claim.tenant_id, claim.message_id, claim.stream, claim.tags, json.loads(claim.metadata)
        )
        judged = classification or classify(reply)
        outcomes: list[Outcome] = []
        events: list[bus_pb2.EventEnvelope] = []
        for recipient in recipients:
            outcome, event = self._outcome(claim, ctx, recipient, reply, judged, remote, now)
            outcomes.append(outcome)
            events.append(event)
            # One line per attempt per recipient; the domain only, never the local part.
            _log.info(
                "delivery attempt",
                extra=log_fields(
                    message_id=claim.message_id,
                    recipient_domain=_domain(recipient.address),
                    remote_host=remote.host if remote is not None and remote.host else via,
                    outcome=outcome.state,
                    smtp_code=reply.code,
                    enhanced_code=reply.enhanced,
                    attempt=recipient.attempts + 1,
                    duration_ms=duration_ms,
                ),
            )
        await self._recorder.record(outcomes, events)
        return judged.verdict is Verdict.DEFERRED

    def _outcome(
        self,
        claim: Claim,
        ctx: EventContext,
        recipient: ClaimedRecipient,
        reply: Reply,
        judged: Classification,
        remote: message_pb2.RemoteServer | None,
        now: datetime,
    ) -> tuple[Outcome, bus_pb2.EventEnvelope]:
        attempt = recipient.attempts + 1
        first = recipient.first_attempt_time or now
        result = judge(
            judged,
            reply,
            attempt=attempt,
            first_attempt_time=first,
            now=now,
            retry=self._retry,
            server_replied=remote is not None,
            sandbox=claim.sandbox,
        )
        outcome = Outcome(
            claim.message_id,
            recipient.position,
            result.state,
            first,
            result.next_attempt_time,
            reply.code,
            reply.enhanced,
            reply.text,
        )
        event = new_event(
            ctx,
            result.event,
            recipient.address,
            discriminator=f"{recipient.position}:{attempt}",
            smtp_reply=message_pb2.SmtpReply(code=reply.code, enhanced_code=reply.enhanced, text=reply.text),
            attempt=attempt,
            next_attempt_time=result.next_attempt_time,
            reason=result.reason,
            when=now,
            bounce_category=result.category,
            remote=remote,
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


def _domain(address: str) -> str:
    return address.rpartition("@")[2].lower()
