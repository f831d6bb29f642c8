"""JetStream adapter: stream set-up, traced publishing with dedupe ids, and pull consumers.

Payloads carry ids only (claim check); PostgreSQL holds bodies and state. Consumers ack only
after their work is durable, so a crash anywhere means a redelivery, never a loss, and every
handler is idempotent against PostgreSQL because the dedupe window is only minutes long.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext, api
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import APIError, NotFoundError

from libs import metrics
from libs.errors import Unavailable
from libs.failures import dependency_failure
from libs.stage_retry import StageRetry, failure_reason
from libs.telemetry import consume_span, publish_span

__all__ = [
    "DELIVER_SUBJECT",
    "EVENTS_STREAM",
    "RETRY_SUBJECT",
    "ROUTE_SUBJECT",
    "WORK_STREAM",
    "Bus",
    "NotNow",
    "Outcome",
    "Publication",
    "StageFailures",
    "event_subject",
]

WORK_STREAM = "POSTWIRE_WORK"
EVENTS_STREAM = "POSTWIRE_EVENTS"
ROUTE_SUBJECT = "postwire.work.route"
DELIVER_SUBJECT = "postwire.work.deliver"
# The retry scheduler's re-publishes: a lane (subject and consumer) apart from new deliveries.
RETRY_SUBJECT = "postwire.work.retry"
EVENTS_PREFIX = "postwire.events"

_log = logging.getLogger(__name__)
# Bound on each step of closing the connection at shutdown, so a NATS that is away cannot hold it.
_CLOSE_FLUSH_SECONDS = 1.0
# How long a consumer's request for the next message waits on the server (its stop flag is read
# in between), and how much longer the consumer waits for the server's answer, so that the
# server's 408 at expiry always ends the request first and none outlives its wait.
_PULL_WAIT_SECONDS = 1.0
_PULL_MARGIN_SECONDS = 0.25
# Statuses that end a pull request without anything wrong: no messages, expired, or a conflict
# the next request settles (as nats-py's fetch treats them). Any other status is an error.
_PULL_ENDS = frozenset({api.StatusCode.NO_MESSAGES, api.StatusCode.REQUEST_TIMEOUT, api.StatusCode.CONFLICT})


def _deliveries(msg: Msg) -> int:
    try:
        return max(1, int(msg.metadata.num_delivered))
    except Exception:
        return 1


def event_subject(tenant_id: str, event_type: str) -> str:
    return f"{EVENTS_PREFIX}.{tenant_id}.{event_type}"


class Outcome(enum.Enum):
    ACK = "ack"


class NotNow(Exception):
    """The handler will not take this message yet, for a reason that settles by itself (the
    message's own outcome is still being committed, or this process is stopping): it is naked
    for redelivery after `retry_after` seconds with no failure counted and no give-up applied.
    Going through the failure bookkeeping instead would let an outage's give-up expire
    recipients whose outcome is a moment from being recorded."""

    def __init__(self, reason: str, *, retry_after: float = 1.0) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


Handler = Callable[[Msg], Awaitable[Outcome]]
# Sweepers re-publish in batches this large: enough to keep the connection busy, few enough that
# one batch's PubAcks arrive well inside the publish time-out.
PUBLISH_BATCH = 256


@dataclass(frozen=True, slots=True)
class Publication:
    subject: str
    payload: bytes
    msg_id: str


class StageFailures(Protocol):
    """A stage's failure bookkeeping, kept in PostgreSQL beside the stage's state.

    Each method answers with the seconds to wait before JetStream redelivers the message (and
    pushes the stage's sweeper due time past that, so the sweeper does not re-publish work that
    JetStream still holds), or None when the work was given up (FAILED or EXPIRED, with its
    event) and the message must be terminated.
    """

    async def unavailable(self, msg: Msg, delay: float) -> float | None:
        """A dependency is down: not the message's fault; give up only at its give-up time."""
        ...

    async def failed(self, msg: Msg, reason: str) -> float | None:
        """Any other failure: counts one attempt; gives up after the stage's max attempts."""
        ...


@dataclass(frozen=True, slots=True)
class ConsumerSpec:
    stream: str
    durable: str
    subject: str
    ack_wait: float = 30.0
    max_ack_pending: int = 1000


class Bus:
    """One NATS connection per process, shared by publishers and consumers."""

    def __init__(self, nc: NATS, js: JetStreamContext) -> None:
        self.nc = nc
        self.js = js
        self._stopping = asyncio.Event()
        self._consumer_tasks: list[asyncio.Task[None]] = []
        # How long a stopping consumer waits for its in-flight handlers before cancelling them
        # (None: as long as they take). Unfinished work is not acked and comes back after AckWait.
        self._stop_timeout: float | None = None

    @classmethod
    async def connect(cls, url: str, *, name: str) -> Bus:
        nc = await nats.connect(
            url,
            name=name,
            # Keep reconnecting forever: NATS restarts must not need a pod restart.
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            connect_timeout=5,
            # Also retry the first connection: pods may start before NATS does.
            allow_reconnect=True,
        )
        bus = cls(nc, nc.jetstream(timeout=5))
        await bus.ensure_streams()
        return bus

    async def ensure_streams(self) -> None:
        """Create or update the streams; safe to run from every replica at every start."""
        work = StreamConfig(
            name=WORK_STREAM,
            subjects=["postwire.work.>"],
            # Work-queue retention removes a task once acked; the DB sweepers re-create lost ones.
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            duplicate_window=120.0,
        )
        events = StreamConfig(
            name=EVENTS_STREAM,
            subjects=[f"{EVENTS_PREFIX}.>"],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            # Retained for StreamEvents replays; the durable record is the events table.
            max_age=7 * 24 * 3600.0,
            duplicate_window=120.0,
        )
        for config in (work, events):
            try:
                await self.js.add_stream(config)
            except Exception:
                await self.js.update_stream(config)

    async def publish(self, subject: str, payload: bytes, *, msg_id: str, confirmed: bool = True) -> None:
        """Publish; `msg_id` makes a replay a no-op inside the window. Confirmed, it waits for the
        PubAck. `confirmed=False` is only for a message whose durable copy lives in PostgreSQL,
        which a sweeper re-publishes if the stream never got it (an outbox row, a recipient queued
        for delivery): waiting for the PubAck cost ~30 us of CPU per message (the request's inbox,
        future and timer, and parsing the PubAck) for nothing the sweeper does not already cover."""
        headers: dict[str, str] = {"Nats-Msg-Id": msg_id}
        with publish_span(subject, headers) as span:
            span.set_attribute("messaging.message.id", msg_id)
            try:
                if not confirmed:
                    await self.nc.publish(subject, payload, headers=headers)
                    return
                ack = await self.js.publish(subject, payload, headers=headers)
            except Exception as exc:
                raise Unavailable(f"message bus unavailable: {type(exc).__name__}") from exc
            if ack.duplicate:
                span.set_attribute("postwire.duplicate", True)

    async def publish_many(self, items: Sequence[Publication], *, batch: int = PUBLISH_BATCH) -> int:
        """Publish pipelined: a batch goes out without waiting for each PubAck, then its PubAcks
        are awaited together. Returns how many were acknowledged; stops at the first batch with a
        failure (NATS away), since the rest would only wait out the same time-out."""
        published = 0
        for start in range(0, len(items), batch):
            chunk = items[start : start + batch]
            results = await asyncio.gather(
                *(self.publish(p.subject, p.payload, msg_id=p.msg_id) for p in chunk), return_exceptions=True
            )
            failures = [r for r in results if isinstance(r, BaseException)]
            published += len(chunk) - len(failures)
            if failures:
                raise failures[0]
        return published

    def start_consumer(
        self,
        spec: ConsumerSpec,
        handler: Handler,
        *,
        concurrency: int = 16,
        failures: StageFailures | None = None,
        retry: StageRetry | None = None,
        linger: float = 0.0,
    ) -> None:
        """`failures` keeps the attempt count where the stage's state lives; without it a failure
        is retried with back-off by JetStream's delivery count alone. `linger`: seconds to wait
        after a fetch that came back short before the next one, so a stage that need not react at
        once takes what arrived meanwhile in one fetch (one pull request, and one batch for
        handlers that share their I/O) instead of a fetch per message or two."""
        # Both series exist from the start, so rate() and the alerts see 0 rather than nothing.
        for kind in ("dependency", "error"):
            metrics.stage_failures.add(0, {"postwire.stage": spec.durable, "postwire.failure.kind": kind})
        self._consumer_tasks.append(
            asyncio.create_task(
                self._consume(spec, handler, concurrency, failures, retry or StageRetry(), linger),
                name=f"consume:{spec.durable}",
            )
        )

    async def _subscribe(self, spec: ConsumerSpec) -> _Puller:
        config = ConsumerConfig(
            name=spec.durable,
            durable_name=spec.durable,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=spec.ack_wait,
            max_ack_pending=spec.max_ack_pending,
            filter_subject=spec.subject,
        )
        # As nats-py's pull_subscribe: create the durable consumer unless it exists.
        try:
            await self.js.consumer_info(spec.stream, spec.durable)
        except NotFoundError:
            await self.js.add_consumer(spec.stream, config=config)
        inbox = self.nc.new_inbox()
        return _Puller(
            self.nc,
            await self.nc.subscribe(inbox),
            f"$JS.API.CONSUMER.MSG.NEXT.{spec.stream}.{spec.durable}",
            inbox,
        )

    async def _consume(
        self,
        spec: ConsumerSpec,
        handler: Handler,
        concurrency: int,
        failures: StageFailures | None,
        retry: StageRetry,
        linger: float,
    ) -> None:
        in_flight: set[asyncio.Task[None]] = set()
        sub: _Puller | None = None
        while not self._stopping.is_set():
            try:
                if sub is None:
                    sub = await self._subscribe(spec)
                if len(in_flight) >= concurrency:
                    await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                    continue
                # Fetch only as many as there are free slots, so nothing sits unacked in memory.
                wanted = concurrency - len(in_flight)
                msgs = await sub.pull(wanted)
                for msg in msgs:
                    task = asyncio.create_task(self._handle(msg, handler, spec.durable, failures, retry))
                    in_flight.add(task)
                    task.add_done_callback(in_flight.discard)
                if linger and len(msgs) < wanted:
                    # Messages arriving meanwhile wait in the stream (not here, unacked) and come
                    # together with the next fetch; a stop ends the wait at once.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), timeout=linger)
            except asyncio.CancelledError:
                break
            except Exception as exc:
                # A vanished stream or consumer (say, a wiped JetStream store) or a NATS outage:
                # re-create both and carry on; the PostgreSQL sweepers re-publish lost work.
                _log.warning("consumer %s: %s; re-subscribing", spec.durable, type(exc).__name__)
                # Close the dead subscription rather than drop it: left registered, it would make
                # the connection's drain wait its whole timeout at shutdown (~30 s after a wipe).
                if sub is not None:
                    await _close_subscription(sub)
                sub = None
                with contextlib.suppress(Exception):
                    await self.ensure_streams()
                await asyncio.sleep(0.5)
        # Stop fetching, then let in-flight work finish; anything unfinished is not acked and
        # comes back to another replica after AckWait.
        if in_flight:
            _, unfinished = await asyncio.wait(in_flight, timeout=self._stop_timeout)
            for task in unfinished:
                task.cancel()
            if unfinished:
                _log.warning(
                    "consumer %s: %d handler(s) cancelled at shutdown", spec.durable, len(unfinished)
                )
                await asyncio.wait(unfinished, timeout=1.0)
        if sub is not None:
            await _close_subscription(sub)

    async def _handle(
        self, msg: Msg, handler: Handler, stage: str, failures: StageFailures | None, retry: StageRetry
    ) -> None:
        try:
            with consume_span(msg.subject, msg.headers):
                done = False
                delay: float | None = None
                try:
                    await handler(msg)
                    done = True
                except NotNow as later:
                    _log.debug("%s on %s; later", later, msg.subject)
                    delay = later.retry_after
                except Exception as exc:
                    delay = await self._settle_failure(msg, exc, stage, failures, retry)
            if done:
                # The work is durable, so the ack need not wait for the server's confirmation: a
                # lost ack is a redelivery that the handler's lease finds done. Acks of one batch
                # go out together with the next flush instead of a round trip each.
                await msg.ack()
            elif delay is None:
                await msg.term()
            else:
                await msg.nak(delay=delay)
        except Exception as exc:
            # Ack failed (NATS away): redelivered after AckWait, and handlers are idempotent.
            _log.warning("ack failed on %s: %s", msg.subject, type(exc).__name__)

    async def _settle_failure(
        self, msg: Msg, exc: Exception, stage: str, failures: StageFailures | None, retry: StageRetry
    ) -> float | None:
        """Seconds until redelivery, or None to terminate (the work was failed or expired)."""
        deliveries = _deliveries(msg)
        # The same line as the servicers draw: a dependency that is down is expected and retried
        # quietly without counting; anything else is a bug and gets its traceback and a count.
        dependency = dependency_failure(exc)
        metrics.stage_failures.add(
            1,
            {
                "postwire.stage": stage,
                "postwire.failure.kind": "error" if dependency is None else "dependency",
            },
        )
        if dependency is not None:
            _log.warning("%s on %s; will retry", dependency.message, msg.subject)
            delay = retry.unavailable_delay(deliveries)
        else:
            _log.error("%s failed on %s", stage, msg.subject, exc_info=exc)
            delay = retry.delay(deliveries)
        if failures is None:
            return delay
        try:
            if dependency is not None:
                return await failures.unavailable(msg, delay)
            return await failures.failed(msg, failure_reason(stage, exc))
        except Exception as bookkeeping:
            # Could not count (the database is away, most likely): try again without counting.
            _log.warning("%s: failure bookkeeping failed: %s", stage, type(bookkeeping).__name__)
            return retry.unavailable_delay(deliveries)

    async def stop_consumers(self, *, timeout: float | None = None) -> None:
        """Stop fetching and wait for in-flight handlers, cancelling any still running after
        `timeout` seconds. Idempotent."""
        if not self._stopping.is_set():
            self._stop_timeout = timeout
        self._stopping.set()
        if self._consumer_tasks:
            await asyncio.gather(*self._consumer_tasks, return_exceptions=True)

    async def close(self) -> None:
        await self.stop_consumers()
        # Not drain(): every consumer has already settled its work and closed its subscription,
        # and every publish waited for its PubAck, so only the acks just written need flushing.
        # drain() would also wait on any subscription the server no longer knows (a wiped store).
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.nc.flush(), _CLOSE_FLUSH_SECONDS)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.nc.close(), _CLOSE_FLUSH_SECONDS)


class _Puller:
    """A durable pull consumer's own inbox, and its requests for messages.

    Not nats-py's fetch(n): after a first message that waits for the rest of the batch until the
    server ends the request; when an earlier request on the same inbox is still open (one the
    client gave up on just before the server expired it), the message comes in under that one,
    nothing ends the current one, and the message waits for the next message or the time-out:
    the idle outlier of 150-700 ms in about one send in a hundred (bench/README.md, session 9).
    Here each request either ends at once (no_wait: what is there now) or asks for one message
    (and ends with it), and anything that arrives on the inbox is handed over without waiting.
    """

    def __init__(self, nc: NATS, sub: Subscription, next_subject: str, inbox: str) -> None:
        self._nc = nc
        self._sub = sub
        self._next_subject = next_subject
        self._inbox = inbox

    async def pull(self, batch: int) -> list[Msg]:
        """Up to `batch` messages as soon as there are any; none after a wait with nothing."""
        msgs = await self._ready(batch)
        if msgs:
            return msgs
        # What is there now: without `expires` the server answers at once, ending with a status
        # unless it sent the whole batch.
        await self._request({"batch": batch, "no_wait": True})
        while len(msgs) < batch:
            msg = await self._next(_PULL_WAIT_SECONDS)
            if msg is None:
                break
            msgs.append(msg)
        if msgs:
            return msgs
        # Nothing yet: wait for the next one. A request for one message ends with it, so no part
        # of it stays open to take a later message this consumer has no slot for.
        await self._request({"batch": 1, "expires": int(_PULL_WAIT_SECONDS * 1e9)})
        msg = await self._next(_PULL_WAIT_SECONDS + _PULL_MARGIN_SECONDS)
        return [] if msg is None else [msg, *await self._ready(batch - 1)]

    async def _ready(self, batch: int) -> list[Msg]:
        """Messages already on the inbox (statuses of requests that are over are dropped)."""
        msgs: list[Msg] = []
        while len(msgs) < batch and self._sub.pending_msgs > 0:
            msg = await self._sub.next_msg(timeout=_PULL_WAIT_SECONDS)
            if not _status(msg):
                msgs.append(msg)
        return msgs

    async def _request(self, request: dict[str, object]) -> None:
        await self._nc.publish(self._next_subject, json.dumps(request).encode(), reply=self._inbox)

    async def _next(self, timeout: float) -> Msg | None:
        """The next message on the inbox; None when a status ended the request or none came."""
        try:
            msg = await self._sub.next_msg(timeout=timeout)
        except (NatsTimeoutError, TimeoutError):
            return None
        status = _status(msg)
        if not status:
            return msg
        if status in _PULL_ENDS:
            return None
        # No consumer behind the subject (a wiped store) and the like: re-subscribe.
        raise APIError.from_msg(msg)

    async def unsubscribe(self) -> None:
        await self._sub.unsubscribe()


def _status(msg: Msg) -> str | None:
    return None if msg.headers is None else msg.headers.get(api.Header.STATUS)


async def _close_subscription(sub: _Puller) -> None:
    """Unsubscribe without waiting on a server that may be gone; the durable consumer stays."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(sub.unsubscribe(), _CLOSE_FLUSH_SECONDS)
