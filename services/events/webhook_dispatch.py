"""Sends due webhook deliveries: leases rows from PostgreSQL, signs, POSTs through the guarded
HTTP client and records the outcome (delivered, due again after a back-off, dead-lettered, or
the endpoint disabled).

Isolation: at most `per_webhook` requests are in flight to one webhook and `max_in_flight` in
all, each bounded by the client's time-out, and a saturated webhook's rows are not even claimed,
so a slow or dead endpoint holds a few slots and never the queue of another tenant."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from opentelemetry.trace import Status, StatusCode
from postwire.v1 import event_pb2

from libs import metrics
from libs.bus import Bus
from libs.coalesce import Coalescer
from libs.event_outbox import publish_events
from libs.http_guard import GuardedHttp, HttpRefused, HttpResponse, HttpTimedOut
from libs.telemetry import client_span
from libs.webhook_secrets import WebhookSecrets
from libs.webhook_signing import sign, webhook_body
from services.events.manage_webhooks import CheckUrl
from services.events.webhook_backlog import Backlog
from services.events.webhook_records import Claim, Delivered
from services.events.webhook_rules import RetrySchedule, should_disable
from services.events.webhook_store import WebhookStore

__all__ = ["WebhookDispatcher", "refusal"]

_log = logging.getLogger(__name__)
SNIPPET_CHARS = 256
# Unsealed secrets kept per (sealed text, webhook): a rotation seals a new text, so an entry never
# goes stale, and the cache is emptied when full rather than tracked entry by entry.
SECRET_CACHE_ENTRIES = 4096
# Leased deliveries waiting in memory for a slot (services.events.webhook_backlog), per webhook
# and in all; a few KiB each, so a few MiB at most.
BACKLOG_PER_WEBHOOK = 1024
BACKLOG_TOTAL = 4096
# Delivered attempts wait this long for others to share their record's statement (and its
# transaction): a few per statement at a moderate rate instead of one each. The endpoint has
# answered and its slot is free meanwhile; a crash before the record means the delivery is sent
# again when its lease expires, as for any unrecorded attempt.
RECORD_LINGER_SECONDS = 0.05
# Attempts waiting for their record do not count against max_in_flight (their request is over),
# up to this many; past it they do again, so a stalled database stops new attempts.
MAX_RECORDING = 256


def refusal(http: GuardedHttp) -> CheckUrl:
    """The catalog's destination check (services.events.manage_webhooks.CheckUrl) over `http`."""

    async def check(url: str) -> str | None:
        try:
            await http.check_url(url)
        except HttpRefused as exc:
            return exc.reason
        return None

    return check


def _snippet(body: bytes) -> str:
    return body[: SNIPPET_CHARS * 4].decode("utf-8", "replace")[:SNIPPET_CHARS]


class WebhookDispatcher:
    def __init__(
        self,
        store: WebhookStore,
        http: GuardedHttp,
        secrets: WebhookSecrets,
        bus: Bus,
        *,
        schedule: RetrySchedule,
        disable_after: timedelta,
        timeout: float,
        max_in_flight: int = 64,
        per_webhook: int = 4,
        interval: float = 0.5,
        record_linger: float = RECORD_LINGER_SECONDS,
    ) -> None:
        self._store = store
        self._http = http
        self._secrets = secrets
        self._bus = bus
        self._schedule = schedule
        self._disable_after = disable_after
        self._timeout = timeout
        # A lease outlives any attempt (time-out plus recording), so a live dispatcher never
        # loses its row to another; a crashed one's rows are due again when it expires.
        self._lease = timedelta(seconds=2 * timeout + 30)
        # A lease waiting in the backlog may still start while an attempt begun then (bounded
        # by the time-out plus 5 s) and its record end well before the lease does.
        self._start_window = timeout + 20
        self._backlog = Backlog(per_webhook=BACKLOG_PER_WEBHOOK, total=BACKLOG_TOTAL, clock=time.monotonic)
        self._max = max_in_flight
        self._per_webhook = per_webhook
        self._interval = interval
        self._in_flight: Counter[str] = Counter()
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._loop: asyncio.Task[None] | None = None
        # Attempts that finish together are recorded in one statement. A delivered attempt frees
        # its webhook's slot when the answer is in, but its task (which stop() waits for) lasts
        # until the record is written.
        self._records: Coalescer[Delivered, None] = Coalescer(
            store.delivered_many, max_batch=256, linger=record_linger
        )
        self._recording = 0
        self._opened: dict[tuple[str, str], str] = {}
        self._releases: set[asyncio.Task[None]] = set()
        self._stopping = False
        # Whether due rows may be waiting for a free slot (see tick).
        self._held_back = False

    @property
    def lease(self) -> timedelta:
        return self._lease

    def start(self) -> None:
        self._loop = asyncio.create_task(self._run(), name="webhook-dispatcher")

    async def stop(self) -> None:
        """Stop claiming, let attempts in flight finish within the time-out, then cancel the
        rest (their leases expire and the rows are tried again)."""
        self._stopping = True
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
        # Waiting leases go back at once, so another replica need not wait for them to expire.
        if self._backlog:
            self._give_back(self._backlog.drain())
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=self._timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._releases:
            await asyncio.gather(*self._releases, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            try:
                claimed = await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                _log.warning("webhook dispatch failed: %s", type(exc).__name__)
                claimed = 0
            if claimed:
                continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._interval)

    def _requesting(self) -> int:
        """Attempts that count against max_in_flight: all but those only waiting for a record."""
        return len(self._tasks) - min(self._recording, MAX_RECORDING)

    async def tick(self) -> int:
        free = self._max - self._requesting()
        if free <= 0:
            self._held_back = True
            return 0
        # Saturated webhooks, and those with leases already waiting here, are not claimed.
        busy = {w for w, n in self._in_flight.items() if n >= self._per_webhook}
        busy.update(self._backlog.webhooks())
        claims = await self._store.claim(limit=free, lease=self._lease, exclude=sorted(busy))
        # Rows may be due that the limits kept out of this claim: a finished attempt frees a
        # slot for them, so it wakes the loop. Otherwise the regular poll finds retries.
        self._held_back = bool(busy) or len(claims) >= free
        before = len(self._tasks)
        self._place(claims)
        return len(self._tasks) - before

    def offer(self, claims: Sequence[Claim]) -> None:
        """Deliveries leased to this dispatcher in the transaction that stored their events: sent
        now, without a claim query, as far as the limits allow; the rest are given back to the
        claim loop at once rather than left to wait for their lease to expire."""
        self._place(claims)

    def _place(self, claims: Sequence[Claim]) -> None:
        """Start each leased claim the limits allow, queue the others behind their webhook, and
        give back to the database what does not fit."""
        start_by = time.monotonic() + self._start_window
        excess: list[Claim] = []
        for claim in claims:
            if self._room(claim.webhook_id) and not self._backlog.holds(claim.webhook_id):
                self._start(claim)
            elif self._stopping or not self._backlog.add(claim, start_by=start_by):
                excess.append(claim)
        if excess:
            self._give_back(excess)

    def _room(self, webhook_id: str) -> bool:
        return (
            not self._stopping
            and self._requesting() < self._max
            and self._in_flight[webhook_id] < self._per_webhook
        )

    def _pump(self, first: str) -> None:
        """Start waiting leases while there is room: the finished attempt's webhook first."""
        if not self._backlog:
            return
        stale: list[Claim] = []
        for webhook_id in (first, *self._backlog.webhooks()):
            while self._room(webhook_id) and (claim := self._backlog.pop(webhook_id, stale)) is not None:
                self._start(claim)
            if self._stopping or self._requesting() >= self._max:
                break
        if stale:
            self._give_back(stale)

    def _give_back(self, claims: Sequence[Claim]) -> None:
        self._held_back = True
        task = asyncio.create_task(self._release(claims), name="webhook-release")
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    def _start(self, claim: Claim) -> None:
        self._in_flight[claim.webhook_id] += 1
        slot = _Slot(claim.webhook_id)
        task = asyncio.create_task(self._attempt(claim, slot))
        self._tasks.add(task)
        task.add_done_callback(functools.partial(self._done, slot=slot))

    async def _release(self, claims: Sequence[Claim]) -> None:
        try:
            await self._store.release_many(claims)
        except Exception as exc:
            # Their leases expire and the claim loop takes them then.
            _log.warning("%d webhook deliveries not released: %s", len(claims), type(exc).__name__)
        self._wake.set()

    def _done(self, task: asyncio.Task[None], *, slot: _Slot) -> None:
        self._tasks.discard(task)
        if slot.held:
            self._free(slot)
        else:
            self._pump(slot.webhook_id)  # room in all, for a webhook held back by max_in_flight

    def _free(self, slot: _Slot) -> None:
        """The request is over: its webhook's slot goes to the next waiting lease."""
        slot.held = False
        webhook_id = slot.webhook_id
        self._in_flight[webhook_id] -= 1
        if self._in_flight[webhook_id] <= 0:
            del self._in_flight[webhook_id]
        self._pump(webhook_id)
        # A webhook with leases still waiting here needs no claim yet.
        if self._held_back and not self._backlog.holds(webhook_id):
            self._wake.set()

    async def _attempt(self, claim: Claim, slot: _Slot) -> None:
        try:
            await self._send(claim, slot)
        except Exception as exc:
            # Recording failed (database away): the lease expires and the row is tried again.
            _log.warning(
                "webhook %s event %s: attempt not recorded: %s",
                claim.webhook_id,
                claim.event_id,
                type(exc).__name__,
            )

    async def _send(self, claim: Claim, slot: _Slot) -> None:
        event = event_pb2.Event.FromString(claim.payload)
        body = webhook_body(event)
        keys = [self._secret(claim.secret, claim.webhook_id)]
        if claim.previous_secret:
            keys.append(self._secret(claim.previous_secret, claim.webhook_id))
        stamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "webhook-id": event.id,
            "webhook-timestamp": str(stamp),
            "webhook-signature": sign(event.id, stamp, body, keys),
        }
        attributes: dict[str, str | int] = {
            "http.request.method": "POST",
            "server.address": urlsplit(claim.url).hostname or "",
            "postwire.webhook.id": claim.webhook_id,
            "postwire.event.id": event.id,
            "postwire.webhook.attempt": claim.attempts + 1,
        }
        with client_span("POST", claim.trace_context, attributes) as span:
            started = time.monotonic()
            response: HttpResponse | None = None
            try:
                # The client bounds each phase; this bounds the whole attempt whatever it does.
                response = await asyncio.wait_for(
                    self._http.post(claim.url, body, headers), timeout=self._timeout + 5
                )
                problem = "" if 200 <= response.status < 300 else _status_problem(response)
            except HttpTimedOut as exc:
                problem = f"timed out: {exc.reason}"
            except HttpRefused as exc:
                # A refused address, a DNS failure, a refused or reset connection, a TLS error.
                problem = exc.reason
            except TimeoutError:
                problem = f"timed out after {self._timeout:g} s"
            except OSError as exc:
                problem = f"connection failed: {exc.strerror or type(exc).__name__}"
            latency_ms = int((time.monotonic() - started) * 1000)
            status = response.status if response is not None else 0
            if status:
                span.set_attribute("http.response.status_code", status)
            metrics.webhook_deliveries.add(
                1, {"postwire.webhook.outcome": "failed" if problem else "delivered"}
            )
            if not problem:
                assert response is not None
                # The endpoint has answered: the next request to it need not wait for this record,
                # and records that wait for one in flight go out together in the next statement.
                self._recording += 1
                try:
                    self._free(slot)
                    await self._records.load(
                        Delivered(claim, status=status, snippet=_snippet(response.body), latency_ms=latency_ms)
                    )
                finally:
                    self._recording -= 1
                return
            span.set_status(Status(StatusCode.ERROR, problem[:128]))
        now = datetime.now(UTC)
        disabled = await self._store.failed(
            claim,
            status=status,
            snippet=problem,
            latency_ms=latency_ms,
            next_attempt=self._schedule.next_attempt(claim.attempts + 1, now),
            disable=lambda code, since, at: should_disable(code, since, at, after=self._disable_after),
        )
        if disabled is not None:
            metrics.webhook_endpoints_disabled.add(1)
            _log.warning("webhook %s disabled: %s", claim.webhook_id, disabled.event.reason)
            await publish_events(self._bus, [disabled])

    def _secret(self, sealed: str, webhook_id: str) -> str:
        """The `whsec_…` secret, unsealed (AES-GCM) once per sealed text rather than per attempt."""
        key = (sealed, webhook_id)
        secret = self._opened.get(key)
        if secret is None:
            secret = self._secrets.open(sealed, webhook_id)
            if len(self._opened) >= SECRET_CACHE_ENTRIES:
                self._opened.clear()
            self._opened[key] = secret
        return secret


class _Slot:
    """One request's place in its webhook's `per_webhook` limit, given back once."""

    __slots__ = ("held", "webhook_id")

    def __init__(self, webhook_id: str) -> None:
        self.webhook_id = webhook_id
        self.held = True


def _status_problem(response: HttpResponse) -> str:
    text = _snippet(response.body)
    if 300 <= response.status < 400:
        return f"HTTP {response.status}: redirects are not followed" + (f"; {text}" if text else "")
    return f"HTTP {response.status}" + (f": {text}" if text else "")
