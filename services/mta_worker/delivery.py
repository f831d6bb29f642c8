"""One destination's recipients of one message: a transaction each, back to back on one
connection (reused from the pool when one is idle, with RSET before reuse).

Each recipient gets its own transaction so that it can carry its own return path (and, later, its
own tracking and unsubscribe headers); its version of the message is made and signed just before
DATA, at every attempt. Every reply is reported the moment it arrives and is made durable before
the next transaction starts, so the duplicate window is one reply to one "." and no wider.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from postwire.v1 import message_pb2

from libs import metrics
from libs.mail.smtp_outcome import Classification, Reply, Verdict, classify
from services.mta_worker.connection_pool import ConnectionPool
from services.mta_worker.endpoints import EndpointPlan
from services.mta_worker.smtp_session import (
    SessionBroken,
    SessionFailure,
    SessionStale,
    SmtpSession,
    Timeouts,
)
from services.mta_worker.store import ClaimedRecipient

__all__ = ["Letter", "RecipientDelivery", "Report"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Letter:
    """One recipient's version of the message, as it goes on the wire."""

    envelope_from: str
    recipient: str
    data: bytes
    smtputf8: bool


# Called with the recipients a reply settles, the reply, a classification when the caller must
# not derive it from the reply (TLS policy, DNS), and the server talked to.
Report = Callable[
    [Sequence[ClaimedRecipient], Reply, Classification | None, message_pb2.RemoteServer | None],
    Awaitable[None],
]


class RecipientDelivery:
    def __init__(
        self,
        pool: ConnectionPool,
        plan: EndpointPlan,
        *,
        helo_name: str,
        timeouts: Timeouts,
        letter: Callable[[ClaimedRecipient], Letter],
        report: Report,
        sent: Callable[[Reply], None] | None = None,
    ) -> None:
        self._pool = pool
        # Called with the last recipient's reply once the connection is back in the pool, before
        # that reply's outcome is made durable.
        self._sent = sent
        self._plan = plan
        self._helo = helo_name
        self._timeouts = timeouts
        self._letter = letter
        self._report = report
        self.reported: set[int] = set()
        # The recipient whose transaction is running, and whether its "." has been written.
        self.current: ClaimedRecipient | None = None
        self._session: SmtpSession | None = None

    @property
    def past_final_dot(self) -> bool:
        return self._session is not None and self._session.past_final_dot

    def unreported(self, recipients: Sequence[ClaimedRecipient]) -> list[ClaimedRecipient]:
        return [r for r in recipients if r.position not in self.reported]

    async def _settle(
        self,
        recipients: Sequence[ClaimedRecipient],
        reply: Reply,
        classification: Classification | None = None,
        remote: message_pb2.RemoteServer | None = None,
    ) -> None:
        fresh = [r for r in recipients if r.position not in self.reported]
        if fresh:
            self.reported.update(r.position for r in fresh)
            await self._report(fresh, reply, classification, remote)

    async def run(self, recipients: Sequence[ClaimedRecipient]) -> None:
        session = self._pool.take(self._plan.key)
        try:
            for index, recipient in enumerate(recipients):
                # RSET only where a transaction was left open: after a reply to "." (or a refused
                # MAIL) the server is ready for the next MAIL (RFC 5321 4.1.1.5), and a connection
                # that died while idle shows itself at MAIL instead (SessionStale below).
                if session is not None and not session.clean and not await session.reset():
                    session = None
                if session is None:
                    session = await self._open_or_defer(recipients[index:])
                    if session is None:
                        return
                self._session = session
                self.current = recipient
                letter = self._letter(recipient)
                # `current` stays set if this is cancelled mid-transaction (shutdown), so the
                # caller can tell a recipient whose "." was written from one never started.
                started = time.perf_counter()
                try:
                    try:
                        reply = await session.deliver(
                            letter.envelope_from, letter.recipient, letter.data, smtputf8=letter.smtputf8
                        )
                    except SessionStale:
                        # Nothing was sent for this recipient: once more on a fresh session,
                        # without counting an attempt (what a failed RSET used to do).
                        fresh = await self._open_or_defer(recipients[index:])
                        if fresh is None:
                            # The stale session is closed: the pool will not shelve it again.
                            return
                        self._session = session = fresh
                        reply = await session.deliver(
                            letter.envelope_from, letter.recipient, letter.data, smtputf8=letter.smtputf8
                        )
                except SessionBroken as broken:
                    _record("transaction", "broken", started)
                    await self._settle([recipient], broken.reply, None, session.remote)
                    self.current = None
                    session = None
                    continue
                _record("transaction", classify(reply).verdict.value, started)
                remote = session.remote
                if index == len(recipients) - 1:
                    # Nothing more to send: the connection (and, through `sent`, the destination's
                    # slot) serves other mail while this outcome is committed, which under load
                    # took longer than the transaction. The message is still acked only after it.
                    if session.connected:
                        self._pool.give_back(self._plan.key, session)
                    session = self._session = None
                    if self._sent is not None:
                        self._sent(reply)
                await self._settle([recipient], reply, None, remote)
                self.current = None
                if session is not None and not session.connected:
                    session = None
        except BaseException:
            # Cancelled (shutdown) or a bug: hang up at once; a polite QUIT could wait minutes.
            if session is not None:
                session.close()
                session = None
            raise
        finally:
            if session is not None:
                self._pool.give_back(self._plan.key, session)

    async def _open_or_defer(self, rest: Sequence[ClaimedRecipient]) -> SmtpSession | None:
        """A new session, or None once `rest` is settled as deferred (no endpoint took one)."""
        try:
            return await self._open()
        except SessionFailure as failure:
            await self._settle(rest, failure.reply, _deferral(failure))
            return None

    async def _open(self) -> SmtpSession:
        """The first endpoint that accepts a session, in the plan's order."""
        last: SessionFailure | None = None
        for endpoint in self._plan.endpoints:
            started = time.perf_counter()
            try:
                session = await SmtpSession.open(endpoint, helo_name=self._helo, timeouts=self._timeouts)
                _record("session", "ok", started)
                return session
            except SessionFailure as failure:
                _record("session", "failed", started)
                _log.info("%s: %s", endpoint, failure.reply.text)
                last = failure
                if not failure.try_next:
                    break
        if last is None:
            raise SessionFailure(Reply(0, "4.4.4", "no address to deliver to"), try_next=False)
        raise last


def _deferral(failure: SessionFailure) -> Classification:
    """No session could be opened: always a deferral (the next attempt may reach a host that is
    back, or a fixed configuration); a problem on our side is categorised CONFIG."""
    if failure.config:
        return Classification(Verdict.DEFERRED, message_pb2.BOUNCE_CATEGORY_CONFIG)
    return Classification(Verdict.DEFERRED, classify(failure.reply).category)


def _record(phase: str, outcome: str, started: float) -> None:
    metrics.smtp_attempt_duration.record(
        (time.perf_counter() - started) * 1000.0,
        {"postwire.smtp.phase": phase, "postwire.smtp.outcome": outcome},
    )
