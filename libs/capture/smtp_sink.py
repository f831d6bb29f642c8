"""A scriptable SMTP sink: an aiosmtpd server on its own thread that records what it accepts.

Used by integration tests (to observe exactly what Postwire put on the wire and to inject
temporary/permanent failures per recipient) and by ``python -m libs.capture`` as a dev inbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import itertools
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from pathlib import Path
from types import TracebackType
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

__all__ = [
    "DATA_SIZE_LIMIT",
    "ReceivedMessage",
    "SmtpSink",
]

log = logging.getLogger(__name__)

DATA_SIZE_LIMIT = 40 * 1024 * 1024
"""Largest DATA payload accepted (octets); advertised through the SIZE extension."""

_SERVER_NAME = "postwire-capture"
_READY_TIMEOUT = 10.0
_SHUTDOWN_TIMEOUT = 5.0
_GREYLIST = re.compile(r"greylist([0-9]+)")
# full<N>: the mailbox is full for the first N RCPTs (a 5xx that RFC 3463 calls persistent
# transient), then accepts: the sender must retry, not bounce.
_FULL = re.compile(r"full([0-9]+)")
# Timing directives, for fault runs: `hold<N>` accepts the DATA (records it) and then holds the
# reply to the final "." N seconds, the window in which a crashed client cannot know it was
# delivered; `slow<N>` is a tarpit that answers RCPT and the final "." each N seconds late.
_HOLD_AFTER = re.compile(r"hold([0-9]+)")
_SLOW = re.compile(r"slow([0-9]+)")
# hold<phase><seconds>: sit on the reply to RCPT, to the final "." or to QUIT, the first time only.
_HOLD = re.compile(r"hold(rcpt|dot|quit)([0-9]+)")

_REPLY_OK = "250 OK"
_REPLY_TEMPFAIL = "451 4.7.1 Try again later"
_REPLY_GREYLISTED = "451 4.7.1 Greylisted, try again later"
_REPLY_PERMFAIL = "550 5.1.1 User unknown"
_REPLY_MAILBOX_FULL = "552 5.2.2 Mailbox full"
_REPLY_NULL_RCPT = "553 5.1.3 Error: null recipient not allowed"
_REPLY_DATAFAIL = "554 5.6.0 Message rejected"
_REPLY_DATATEMP = "451 4.3.0 Temporary failure at end of data"
_DISCONNECTED = "disconnect"


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    """One message the sink accepted (DATA answered 250), with its envelope."""

    index: int
    mail_from: str
    rcpt_tos: tuple[str, ...]
    mail_options: tuple[str, ...]
    data: bytes
    received_at: float
    # Frozen + slots rules out functools.cached_property, so the parsed headers are
    # cached in a hidden slot and filled in with object.__setattr__.
    _headers: EmailMessage | None = field(default=None, init=False, repr=False, compare=False)

    def header(self, name: str) -> str | None:
        """Return the (RFC 2047 decoded) value of header ``name``, or None if absent."""
        headers = self._headers
        if headers is None:
            parsed = BytesHeaderParser(policy=email.policy.default).parsebytes(self.data)
            assert isinstance(parsed, EmailMessage)
            headers = parsed
            object.__setattr__(self, "_headers", headers)
        value = headers.get(name)
        return None if value is None else str(value)

    def parsed(self) -> EmailMessage:
        """Parse the full message; a fresh object each call, so callers may mutate it."""
        message = email.message_from_bytes(self.data, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        return message


class SmtpSink:
    """An SMTP server on a background thread that records accepted mail.

    With ``scripted=True`` the recipient local part (up to the first ``+``) selects a
    behaviour: ``tempfail``, ``greylist<N>``, ``full<N>`` (552 5.2.2 mailbox full for the first N
    RCPTs), ``permfail``, ``datafail``, ``datatemp``,
    ``disconnect``, ``hold<N>`` (record the message, then answer the final "." N seconds late)
    or ``slow<N>`` (answer RCPT and the final "." each N seconds late); anything else is accepted.

    ``holdrcpt<N>``, ``holddot<N>`` and ``holdquit<N>`` hold the reply to that recipient's RCPT,
    to the final "." of a transaction including it (before recording it), or to the QUIT after
    such a transaction, for N seconds, the first time only (per address), then answer as usual. A
    hold is recorded in ``attempts()`` as ``(address, "HOLD", "RCPT" | "DATA" | "QUIT")`` when it
    begins. A client that hangs up while a ``holddot`` reply is held gets nothing delivered, as
    from a server that discards an unacknowledged message: recorded as ``(address, "DATA",
    "dropped")``.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        store_dir: Path | None = None,
        scripted: bool = True,
        smtputf8: bool = True,
        pipelining: bool = True,
    ) -> None:
        self._host = host
        self._requested_port = port
        self._port = port
        self._store_dir = Path(store_dir) if store_dir is not None else None
        self._scripted = scripted
        self._smtputf8 = smtputf8
        # Offered as every large receiving MTA offers it (RFC 2920), so senders pipeline here as
        # they would in production.
        self._pipelining = pipelining
        # Reentrant so a wait_for() predicate may itself call messages().
        self._cond = threading.Condition(threading.RLock())
        self._messages: list[ReceivedMessage] = []
        self._attempts: list[tuple[str, str, str]] = []
        self._greylist_seen: dict[str, int] = {}
        self._full_seen: dict[str, int] = {}
        self._disconnected: set[str] = set()
        # Which connection accepted each message, and when each connection closed: enough to
        # tell how many transactions were past "." and still open at a given moment.
        self._message_session: dict[int, int] = {}
        self._session_closed: dict[int, float] = {}
        self._held: set[tuple[str, str]] = set()
        self._next_index = 1
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_requested: asyncio.Event | None = None
        self._startup_error: BaseException | None = None

    # -- lifecycle -------------------------------------------------------------------

    @property
    def host(self) -> str:
        """The address the server binds to."""
        return self._host

    @property
    def port(self) -> int:
        """The bound port (the requested one until start() has resolved ``port=0``)."""
        return self._port

    @property
    def store_dir(self) -> Path | None:
        """Directory accepted messages are persisted to, if any."""
        return self._store_dir

    def start(self) -> None:
        """Load any stored mail, bind and serve; returns once the port accepts connections."""
        if self._thread is not None:
            raise RuntimeError("SmtpSink is already running")
        if self._store_dir is not None:
            self._load_store(self._store_dir)
        ready = threading.Event()
        thread = threading.Thread(target=self._run, args=(ready,), name="smtp-sink", daemon=True)
        thread.start()
        if not ready.wait(_READY_TIMEOUT):
            # The loop is stuck somewhere before listening; nothing sane left to do but report.
            raise TimeoutError(f"SMTP sink did not start listening within {_READY_TIMEOUT}s")
        if self._startup_error is not None:
            thread.join()
            error, self._startup_error = self._startup_error, None
            raise error
        self._thread = thread

    def stop(self) -> None:
        """Close the listener and every open session, then join the thread. Idempotent."""
        thread, loop, stop_requested = self._thread, self._loop, self._stop_requested
        if thread is None:
            return
        if loop is not None and stop_requested is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(stop_requested.set)
        thread.join()
        self._thread = None
        self._loop = None
        self._stop_requested = None

    def __enter__(self) -> SmtpSink:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- observation -----------------------------------------------------------------

    def messages(self) -> list[ReceivedMessage]:
        """A snapshot of every accepted message, oldest first."""
        with self._cond:
            return list(self._messages)

    def attempts(self) -> list[tuple[str, str, str]]:
        """Every RCPT/DATA verdict as ``(address, phase, code)``.

        ``phase`` is ``"RCPT"`` or ``"DATA"`` (one DATA entry per accepted recipient);
        ``code`` is the three-digit reply code, ``"disconnect"`` when the sink hung up, or
        ``"dropped"`` when the client hung up during a held reply to ".". Holds add
        ``(address, "HOLD", phase)`` entries (see the class docstring).
        """
        with self._cond:
            return list(self._attempts)

    def open_past_dot(self, moment: float) -> int:
        """Transactions whose DATA was received by ``moment`` (time.time()) on a connection
        still open at that moment: what a client killed then may deliver twice."""
        with self._cond:
            return sum(
                1
                for message in self._messages
                if message.received_at <= moment
                and self._session_closed.get(self._message_session.get(message.index, -1), moment) >= moment
            )

    def wait_for(
        self, predicate: Callable[[list[ReceivedMessage]], bool], timeout: float
    ) -> list[ReceivedMessage]:
        """Block until ``predicate(messages)`` is true and return that snapshot.

        Raises TimeoutError (describing what did arrive) after ``timeout`` seconds.
        """
        snapshot: list[ReceivedMessage] = []

        def satisfied() -> bool:
            nonlocal snapshot
            snapshot = list(self._messages)
            return predicate(snapshot)

        with self._cond:
            if self._cond.wait_for(satisfied, timeout):
                return snapshot
            raise TimeoutError(
                f"condition not met within {timeout}s; {len(snapshot)} message(s) received"
                + _describe(snapshot)
            )

    def clear(self) -> None:
        """Forget all messages, attempts and scripting state (and delete stored files)."""
        with self._cond:
            self._messages.clear()
            self._attempts.clear()
            self._greylist_seen.clear()
            self._full_seen.clear()
            self._disconnected.clear()
            self._message_session.clear()
            self._session_closed.clear()
            self._held.clear()
            if self._store_dir is not None and self._store_dir.is_dir():
                for path in self._store_dir.iterdir():
                    if _stored_index(path) is not None:
                        path.unlink(missing_ok=True)
            # Indexes keep counting so an open inbox tab never shows a different mail
            # under a URL it already had.
            self._cond.notify_all()

    # -- event-loop thread -----------------------------------------------------------

    def _run(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._serve(loop, ready))
        except Exception as error:  # surfaced to start() instead of dying silently
            if not ready.is_set():
                self._startup_error = error
                ready.set()
            else:
                log.exception("SMTP sink event loop crashed")
        finally:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
            finally:
                loop.close()

    async def _serve(self, loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
        sessions: set[_Session] = set()
        handler = _Handler(self)

        def new_session() -> _Session:
            return _Session(
                handler,
                sessions,
                loop=loop,
                hostname=_SERVER_NAME,
                data_size_limit=DATA_SIZE_LIMIT,
                enable_SMTPUTF8=self._smtputf8,
                decode_data=False,
            )

        server = await self._listen(loop, new_session)
        self._stop_requested = asyncio.Event()
        self._loop = loop
        self._port = server.sockets[0].getsockname()[1]
        ready.set()
        try:
            await self._stop_requested.wait()
        finally:
            server.close()
            open_sessions = list(sessions)
            for session in open_sessions:
                session.hang_up()
            pending = [session.finished() for session in open_sessions]
            if pending:
                _, stuck = await asyncio.wait(pending, timeout=_SHUTDOWN_TIMEOUT)
                for waiter in stuck:
                    waiter.cancel()
                await asyncio.gather(*stuck, return_exceptions=True)
            await server.wait_closed()

    async def _listen(
        self, loop: asyncio.AbstractEventLoop, factory: Callable[[], _Session]
    ) -> asyncio.Server:
        port = self._requested_port
        # A host that resolves to several addresses (e.g. "localhost") gets one ephemeral
        # port per socket with port=0; rebind all on the first one so `.port` is the truth.
        for _ in range(5):
            server = await loop.create_server(factory, host=self._host, port=port)
            ports = {sock.getsockname()[1] for sock in server.sockets}
            if len(ports) == 1 or self._requested_port != 0:
                return server
            port = server.sockets[0].getsockname()[1]
            server.close()
            await server.wait_closed()
        raise OSError(f"could not bind every address of {self._host!r} to one port")

    # -- scripting (called on the loop thread) ---------------------------------------

    def _rcpt_reply(self, address: str) -> str:
        key = address.lower()
        with self._cond:
            reply = _REPLY_OK
            if not address:
                reply = _REPLY_NULL_RCPT
            elif self._scripted:
                directive = _directive(address)
                greylist = _GREYLIST.fullmatch(directive)
                full = _FULL.fullmatch(directive)
                if directive == "tempfail":
                    reply = _REPLY_TEMPFAIL
                elif directive == "permfail":
                    reply = _REPLY_PERMFAIL
                elif greylist is not None and int(greylist.group(1)) >= 1:
                    seen = self._greylist_seen.get(key, 0)
                    if seen < int(greylist.group(1)):
                        self._greylist_seen[key] = seen + 1
                        reply = _REPLY_GREYLISTED
                elif full is not None and int(full.group(1)) >= 1:
                    seen = self._full_seen.get(key, 0)
                    if seen < int(full.group(1)):
                        self._full_seen[key] = seen + 1
                        reply = _REPLY_MAILBOX_FULL
            self._attempts.append((address, "RCPT", reply[:3]))
        return reply

    def _delay(self, rcpt_tos: list[str], pattern: re.Pattern[str]) -> float:
        """Seconds a timing directive asks this reply to wait (the longest among recipients)."""
        if not self._scripted:
            return 0.0
        matches = (pattern.fullmatch(_directive(rcpt)) for rcpt in rcpt_tos)
        return float(max((int(m.group(1)) for m in matches if m is not None), default=0))

    def _closed(self, session: int) -> None:
        with self._cond:
            self._session_closed.setdefault(session, time.time())

    def _data_verdict(self, rcpt_tos: list[str]) -> str:
        """Return the DATA reply for this transaction, or ``_DISCONNECTED`` to hang up."""
        if not self._scripted:
            return _REPLY_OK
        directives = {rcpt.lower(): _directive(rcpt) for rcpt in rcpt_tos}
        with self._cond:
            first_time = {
                key
                for key, directive in directives.items()
                if directive == "disconnect" and key not in self._disconnected
            }
            if first_time:
                self._disconnected.update(first_time)
                return _DISCONNECTED
        values = set(directives.values())
        if "datafail" in values:
            return _REPLY_DATAFAIL
        if "datatemp" in values:
            return _REPLY_DATATEMP
        return _REPLY_OK

    def _hold(self, rcpt_tos: list[str], phase: str) -> float:
        """Seconds to sit on the reply for `phase` ("rcpt", "dot", "quit"); 0 if not scripted
        or already held once for every address asking for it."""
        if not self._scripted:
            return 0.0
        seconds = 0.0
        with self._cond:
            for rcpt in rcpt_tos:
                match = _HOLD.fullmatch(_directive(rcpt))
                key = (rcpt.lower(), phase)
                if match is None or match.group(1) != phase or key in self._held:
                    continue
                self._held.add(key)
                seconds = max(seconds, float(match.group(2)))
                label = {"rcpt": "RCPT", "dot": "DATA", "quit": "QUIT"}[phase]
                self._attempts.append((rcpt, "HOLD", label))
            self._cond.notify_all()
        return seconds

    def _record_data_attempts(self, rcpt_tos: list[str], code: str) -> None:
        with self._cond:
            self._attempts.extend((rcpt, "DATA", code) for rcpt in rcpt_tos)

    def _accept(self, envelope: Envelope, session: int = -1) -> ReceivedMessage:
        content = envelope.original_content
        assert isinstance(content, bytes)
        with self._cond:
            message = ReceivedMessage(
                index=self._next_index,
                mail_from=_reverse_path(envelope.mail_from),
                rcpt_tos=tuple(envelope.rcpt_tos),
                mail_options=tuple(envelope.mail_options),
                data=content,
                received_at=time.time(),
            )
            self._next_index += 1
            self._message_session[message.index] = session
            if self._store_dir is not None:
                # Written before publishing so a waiter that sees the message also sees the file.
                _write_stored(self._store_dir, message)
            self._messages.append(message)
            self._attempts.extend((rcpt, "DATA", "250") for rcpt in message.rcpt_tos)
            self._cond.notify_all()
        return message

    # -- persistence -----------------------------------------------------------------

    def _load_store(self, store_dir: Path) -> None:
        store_dir.mkdir(parents=True, exist_ok=True)
        loaded: list[ReceivedMessage] = []
        for sidecar in sorted(store_dir.glob("*.json")):
            index = _stored_index(sidecar)
            if index is None:
                continue
            try:
                meta = json.loads(sidecar.read_text(encoding="utf-8"))
                data = sidecar.with_suffix(".eml").read_bytes()
                loaded.append(
                    ReceivedMessage(
                        index=index,
                        mail_from=str(meta["mail_from"]),
                        rcpt_tos=tuple(str(r) for r in meta["rcpt_tos"]),
                        mail_options=tuple(str(o) for o in meta.get("mail_options", ())),
                        data=data,
                        received_at=float(meta["received_at"]),
                    )
                )
            except (OSError, ValueError, KeyError, TypeError) as error:
                # One damaged file should not cost the rest of the inbox.
                log.warning("skipping unreadable stored message %s: %s", sidecar, error)
        loaded.sort(key=lambda message: message.index)
        with self._cond:
            self._messages = loaded
            self._next_index = max(self._next_index, (loaded[-1].index + 1) if loaded else 1)
            self._cond.notify_all()


class _Handler:
    """aiosmtpd hook object; kept apart from SmtpSink so its public API stays clean."""

    def __init__(self, sink: SmtpSink) -> None:
        self._sink = sink

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        # The five-argument hook replaces aiosmtpd's bookkeeping, so it records the name itself.
        session.host_name = hostname
        if self._sink._pipelining:
            responses.insert(len(responses) - 1, "250-PIPELINING")
        return responses

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        hold = self._sink._hold([address], "rcpt")
        if hold:
            await asyncio.sleep(hold)
        # aiosmtpd parses RCPT TO:<> as the literal address "<>".
        reply = self._sink._rcpt_reply("" if address == "<>" else address)
        slow = self._sink._delay([address], _SLOW)
        if slow:
            await asyncio.sleep(slow)
        if reply.startswith("250"):
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(rcpt_options)
        return reply

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        rcpt_tos = list(envelope.rcpt_tos)
        if isinstance(server, _Session):
            server.last_rcpts = rcpt_tos
        hold = self._sink._hold(rcpt_tos, "dot")
        if hold:
            try:
                await asyncio.sleep(hold)
            except asyncio.CancelledError:
                # The client hung up (aiosmtpd cancels the session): nothing is delivered.
                self._sink._record_data_attempts(rcpt_tos, "dropped")
                raise
        verdict = self._sink._data_verdict(rcpt_tos)
        if verdict == _DISCONNECTED:
            self._sink._record_data_attempts(rcpt_tos, _DISCONNECTED)
            assert server.transport is not None
            server.transport.close()
            # Returning would make aiosmtpd write a reply into the closing socket (it is
            # still flushed); parking here until connection_lost() cancels the session
            # task guarantees the client sees a bare hang-up.
            await asyncio.Event().wait()
        if verdict != _REPLY_OK:
            self._sink._record_data_attempts(rcpt_tos, verdict[:3])
            return verdict
        message = self._sink._accept(envelope, server.number if isinstance(server, _Session) else -1)
        # Held after recording: the sink owns the message now, only the client does not know it.
        held = self._sink._delay(rcpt_tos, _HOLD_AFTER) + self._sink._delay(rcpt_tos, _SLOW)
        if held:
            await asyncio.sleep(held)
        return f"250 2.0.0 OK queued as {message.index}"

    async def handle_QUIT(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        last = server.last_rcpts if isinstance(server, _Session) else []
        hold = self._sink._hold(last, "quit")
        if hold:
            await asyncio.sleep(hold)
        # Every transaction on this connection has had its answer; the socket's close is noticed
        # later (connection_lost), after the client has already read the 221.
        if isinstance(server, _Session):
            self._sink._closed(server.number)
        return "221 Bye"


class _Session(SMTP):
    """aiosmtpd's SMTP protocol, tracked so stop() can close live connections cleanly."""

    _numbers = itertools.count(1)

    def __init__(self, handler: _Handler, registry: set[_Session], **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._sink_handler = handler
        self.number = next(self._numbers)
        self._registry = registry
        # The recipients of the last transaction on this connection, for a QUIT hold.
        self.last_rcpts: list[str] = []
        self._lost: asyncio.Future[None] = self.loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._registry.add(self)
        task = self._handler_coroutine
        if task is not None:
            # aiosmtpd re-raises ConnectionResetError out of the session task; retrieve it
            # so it is not reported as "Task exception was never retrieved".
            task.add_done_callback(_consume_result)

    def connection_lost(self, error: Exception | None) -> None:
        super().connection_lost(error)
        self._registry.discard(self)
        self._sink_handler._sink._closed(self.number)
        if not self._lost.done():
            self._lost.set_result(None)

    def hang_up(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def finished(self) -> asyncio.Future[Any]:
        """Completes once the transport is gone and the session task has unwound."""
        waits: list[asyncio.Future[Any]] = [self._lost]
        if self._handler_coroutine is not None:
            waits.append(self._handler_coroutine)
        return asyncio.gather(*waits, return_exceptions=True)


def _consume_result(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()


def _directive(address: str) -> str:
    local = address.rpartition("@")[0] if "@" in address else address
    return local.split("+", 1)[0].lower()


def _reverse_path(mail_from: str | None) -> str:
    # aiosmtpd records the null reverse-path `MAIL FROM:<>` as the string "<>".
    if not mail_from or mail_from == "<>":
        return ""
    return mail_from


def _describe(messages: list[ReceivedMessage]) -> str:
    if not messages:
        return ""
    shown = [
        f"#{m.index} from={m.mail_from!r} to={list(m.rcpt_tos)!r} subject={m.header('Subject')!r}"
        for m in messages[-10:]
    ]
    more = f" (last {len(shown)})" if len(messages) > len(shown) else ""
    return f"{more}: " + "; ".join(shown)


def _stored_name(index: int) -> str:
    return f"{index:08d}"


def _stored_index(path: Path) -> int | None:
    if path.suffix not in (".eml", ".json") or not path.stem.isdigit():
        return None
    return int(path.stem)


def _write_stored(store_dir: Path, message: ReceivedMessage) -> None:
    store_dir.mkdir(parents=True, exist_ok=True)
    stem = _stored_name(message.index)
    meta = {
        "index": message.index,
        "mail_from": message.mail_from,
        "rcpt_tos": list(message.rcpt_tos),
        "mail_options": list(message.mail_options),
        "received_at": message.received_at,
    }
    # The sidecar is written last and is what loading keys on, so a crash mid-write
    # leaves at worst an orphan .eml rather than a half-read message.
    _atomic_write(store_dir / f"{stem}.eml", message.data)
    _atomic_write(store_dir / f"{stem}.json", json.dumps(meta, indent=2).encode("utf-8"))


def _atomic_write(path: Path, payload: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(payload)
    os.replace(tmp, path)
