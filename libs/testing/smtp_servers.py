"""Scripted SMTP servers for delivery tests: remote MTAs and relays on loopback that record what
arrived, byte for byte.

Each server is scripted as a whole, the way one remote host behaves (its TLS, AUTH, greeting,
extensions and per-recipient replies), unlike libs.capture.SmtpSink, which scripts by recipient
local part. Several servers can listen on 127.0.0.2, 127.0.0.3, … on ONE port, because MX delivery
connects to a single port (POSTWIRE_MX_PORT) on whatever addresses DNS names.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import email
import email.policy
import itertools
import logging
import ssl
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from types import TracebackType
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session, TLSSetupException

from libs.testing.polling import poll_until

__all__ = [
    "AuthAttempt",
    "Connection",
    "ScriptedSmtpServer",
    "TlsInfo",
    "Transaction",
]

log = logging.getLogger(__name__)

_READY_TIMEOUT = 10.0
_SHUTDOWN_TIMEOUT = 5.0
_DEFAULT_HOSTNAME = "mx.test.example"
_REPLY_ENCRYPTION_REQUIRED = "538 5.7.11 Encryption required for requested authentication mechanism"
_REPLY_AUTH_NOT_OFFERED = "502 5.5.1 AUTH not offered"
_REPLY_AUTH_REQUIRED = "530 5.7.0 Authentication required"


@dataclass(frozen=True, slots=True)
class TlsInfo:
    """The TLS a connection ended up with: protocol version ("TLSv1.3") and cipher name."""

    version: str
    cipher: str


@dataclass(frozen=True, slots=True)
class AuthAttempt:
    """One AUTH command, recorded whether or not the server accepted it.

    ``username`` is None when the client never sent one (refused before the exchange, or a
    mechanism that carries none); ``tls`` says whether TLS was active when AUTH was sent.
    """

    mechanism: str
    tls: bool
    username: str | None
    success: bool


@dataclass(frozen=True, slots=True)
class Transaction:
    """One message as it arrived: accepted (the final "." answered 250), or refused by data_reply."""

    mail_from: str
    mail_options: tuple[str, ...]
    rcpt_tos: tuple[str, ...]
    rcpt_options: tuple[str, ...]
    data: bytes
    tls: TlsInfo | None

    def parsed(self) -> EmailMessage:
        """The message parsed with the default (RFC 6532 aware) policy; a fresh object each call."""
        message = email.message_from_bytes(self.data, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        return message


@dataclass(frozen=True, slots=True)
class Connection:
    """Everything one client connection did, in order."""

    peer: tuple[str, int]
    local: tuple[str, int]
    tls: TlsInfo | None
    ehlo: str | None
    auth_user: str | None
    auth_attempts: tuple[AuthAttempt, ...]
    transactions: tuple[Transaction, ...]
    refused: tuple[Transaction, ...]
    rsets: int
    closed: bool


@dataclass
class _ConnectionLog:
    """The mutable record behind a Connection; only touched under the server's lock."""

    peer: tuple[str, int]
    local: tuple[str, int]
    tls: TlsInfo | None = None
    ehlo: str | None = None
    auth_user: str | None = None
    auth_attempts: list[AuthAttempt] = field(default_factory=list)
    transactions: list[Transaction] = field(default_factory=list)
    refused: list[Transaction] = field(default_factory=list)
    rsets: int = 0
    closed: bool = False

    def frozen(self) -> Connection:
        return Connection(
            peer=self.peer,
            local=self.local,
            tls=self.tls,
            ehlo=self.ehlo,
            auth_user=self.auth_user,
            auth_attempts=tuple(self.auth_attempts),
            transactions=tuple(self.transactions),
            refused=tuple(self.refused),
            rsets=self.rsets,
            closed=self.closed,
        )


class ScriptedSmtpServer:
    """An aiosmtpd server on its own thread and loop, bound to ``host``:``port``.

    Options, all keyword-only:
    - ``hostname``: the name in the banner and the EHLO reply.
    - ``starttls``: offer STARTTLS with this server context; ``implicit_tls``: TLS from the first
      byte (port 465 style). At most one of the two.
    - ``auth``: username → password; offers AUTH PLAIN and LOGIN and requires AUTH before MAIL.
      AUTH is offered and accepted only under TLS unless ``auth_require_tls=False`` (a relay that
      takes passwords in plain text, to prove a client never sends them). Every AUTH command is
      recorded, including one refused for lack of TLS or sent to a server that offers no AUTH.
    - ``greeting``: a non-2xx greeting ("421 4.3.2 Service not available"); the server writes it
      and hangs up.
    - ``rcpt_replies``: address (case-insensitive) → reply for RCPT; others get 250.
    - ``data_reply``: the reply to every final "." instead of 250; a failing one refuses the
      message (recorded in ``Connection.refused``, not among the transactions).
    A scripted reply may span several lines, joined by "\n" ("550-5.7.26 …\n550 5.7.26 … - gsmtp"),
    as the big providers answer.
    - ``smtputf8``, ``eightbitmime``: offer the extension or not. Without 8BITMIME a MAIL with
      BODY=8BITMIME is refused (555), as strict servers do.
    - ``size_limit``: advertised with SIZE and enforced; None advertises no SIZE.
    - ``reply_delay``: seconds to wait before every reply (greeting included).
    - ``pipelining``: offer PIPELINING (RFC 2920); aiosmtpd reads pipelined commands in order.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        hostname: str = _DEFAULT_HOSTNAME,
        starttls: ssl.SSLContext | None = None,
        implicit_tls: ssl.SSLContext | None = None,
        auth: Mapping[str, str] | None = None,
        auth_require_tls: bool = True,
        greeting: str | None = None,
        rcpt_replies: Mapping[str, str] | None = None,
        data_reply: str | None = None,
        smtputf8: bool = True,
        eightbitmime: bool = True,
        size_limit: int | None = None,
        reply_delay: float = 0.0,
        pipelining: bool = False,
    ) -> None:
        if starttls is not None and implicit_tls is not None:
            raise ValueError("starttls and implicit_tls are exclusive")
        if greeting is not None and not _is_reply(greeting, failing=True):
            raise ValueError(f"greeting must be a 4xx or 5xx reply, got {greeting!r}")
        if data_reply is not None and not _is_reply(data_reply, failing=False):
            raise ValueError(f"data_reply is not a reply: {data_reply!r}")
        replies = {address.lower(): reply for address, reply in (rcpt_replies or {}).items()}
        for address, reply in replies.items():
            if not _is_reply(reply, failing=False):
                raise ValueError(f"rcpt_replies[{address!r}] is not a reply: {reply!r}")
        self.host = host
        self.hostname = hostname
        self.starttls = starttls
        self.implicit_tls = implicit_tls
        self.auth = dict(auth) if auth is not None else None
        self.auth_require_tls = auth_require_tls
        self.greeting = greeting
        self.rcpt_replies = replies
        self.data_reply = data_reply
        self.smtputf8 = smtputf8
        self.eightbitmime = eightbitmime
        self.size_limit = size_limit
        self.reply_delay = reply_delay
        self.pipelining = pipelining
        self._requested_port = port
        self._port = port
        self._lock = threading.Lock()
        self._connections: list[_ConnectionLog] = []
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_requested: asyncio.Event | None = None
        self._startup_error: BaseException | None = None

    # -- lifecycle -------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound port (the requested one until start() has resolved ``port=0``)."""
        return self._port

    @property
    def address(self) -> str:
        """host:port, as a client or a setting (POSTWIRE_SMARTHOST) names it."""
        return f"{self.host}:{self._port}"

    def start(self) -> ScriptedSmtpServer:
        """Bind and serve; returns once the port accepts connections."""
        if self._thread is not None:
            raise RuntimeError("ScriptedSmtpServer is already running")
        ready = threading.Event()
        thread = threading.Thread(
            target=self._run, args=(ready,), name=f"scripted-smtp-{self.host}", daemon=True
        )
        thread.start()
        if not ready.wait(_READY_TIMEOUT):
            raise TimeoutError(f"scripted SMTP server did not listen within {_READY_TIMEOUT}s")
        if self._startup_error is not None:
            thread.join()
            error, self._startup_error = self._startup_error, None
            raise error
        self._thread = thread
        return self

    def close(self) -> None:
        """Stop listening, hang up on every client and join the thread. Idempotent."""
        thread, loop, stop_requested = self._thread, self._loop, self._stop_requested
        if thread is None:
            return
        if loop is not None and stop_requested is not None:
            with contextlib.suppress(RuntimeError):  # the loop already closed
                loop.call_soon_threadsafe(stop_requested.set)
        thread.join()
        self._thread = None
        self._loop = None
        self._stop_requested = None

    def __enter__(self) -> ScriptedSmtpServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- observation -----------------------------------------------------------------

    def connections(self) -> list[Connection]:
        """Every connection so far, oldest first."""
        with self._lock:
            return [record.frozen() for record in self._connections]

    def transactions(self) -> list[Transaction]:
        """Every accepted message on every connection, in arrival order."""
        with self._lock:
            return [t for record in self._connections for t in record.transactions]

    def auth_attempts(self) -> list[AuthAttempt]:
        """Every AUTH command on every connection, accepted or not."""
        with self._lock:
            return [a for record in self._connections for a in record.auth_attempts]

    async def wait_for(self, count: int = 1, *, timeout: float = 30.0) -> list[Transaction]:
        """Poll (without blocking the caller's loop) until ``count`` messages have arrived."""

        async def probe() -> list[Transaction]:
            arrived = self.transactions()
            return arrived if len(arrived) >= count else []

        return await poll_until(
            probe, timeout=timeout, what=f"{count} transaction(s) at {self.address}", interval=0.05
        )

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
                log.exception("scripted SMTP server loop crashed")
        finally:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
            finally:
                loop.close()

    async def _serve(self, loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
        live: set[_Session | _Refusal] = set()
        handler = _Handler(self)

        def new_protocol() -> _Session | _Refusal:
            if self.greeting is not None:
                return _Refusal(self, live, self.greeting)
            return _Session(
                self,
                handler,
                live,
                loop=loop,
                hostname=self.hostname,
                tls_context=self.starttls,
                data_size_limit=self.size_limit,
                enable_SMTPUTF8=self.smtputf8,
                decode_data=False,
                # TLS for AUTH is enforced here (smtp_AUTH), because aiosmtpd only counts STARTTLS
                # as TLS, not a connection that was TLS from the first byte.
                auth_require_tls=False,
                authenticator=_authenticate,
            )

        server = await loop.create_server(
            new_protocol, host=self.host, port=self._requested_port, ssl=self.implicit_tls
        )
        self._stop_requested = asyncio.Event()
        self._loop = loop
        self._port = int(server.sockets[0].getsockname()[1])
        ready.set()
        try:
            await self._stop_requested.wait()
        finally:
            server.close()
            open_protocols = list(live)
            for protocol in open_protocols:
                protocol.hang_up()
            pending = [protocol.finished() for protocol in open_protocols]
            if pending:
                _, stuck = await asyncio.wait(pending, timeout=_SHUTDOWN_TIMEOUT)
                for waiter in stuck:
                    waiter.cancel()
                await asyncio.gather(*stuck, return_exceptions=True)
            await server.wait_closed()

    # -- recording (called on the loop thread) -----------------------------------------

    def _open(self, transport: asyncio.BaseTransport) -> _ConnectionLog:
        record = _ConnectionLog(
            peer=_address(transport.get_extra_info("peername")),
            local=_address(transport.get_extra_info("sockname")),
            tls=_tls_of(transport),
        )
        with self._lock:
            self._connections.append(record)
        return record

    def _update(self, record: _ConnectionLog, change: Callable[[_ConnectionLog], None]) -> None:
        with self._lock:
            change(record)


class _Handler:
    """aiosmtpd hooks: the scripted replies, and what each connection did."""

    def __init__(self, server: ScriptedSmtpServer) -> None:
        self._server = server

    async def handle_EHLO(
        self, smtp: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        # The five-argument hook replaces aiosmtpd's bookkeeping, so it records the name itself.
        session.host_name = hostname
        assert isinstance(smtp, _Session)
        self._server._update(smtp.record, lambda r: setattr(r, "ehlo", hostname))
        offer_auth = self._server.auth is not None and (
            smtp.tls_active() or not self._server.auth_require_tls
        )
        kept = []
        for line in responses:
            keyword = line[4:].split(" ", 1)[0].upper()
            if keyword == "8BITMIME" and not self._server.eightbitmime:
                continue
            if keyword == "AUTH" and not offer_auth:
                continue
            kept.append(line)
        if self._server.pipelining:
            kept.insert(len(kept) - 1, "250-PIPELINING")
        return kept

    async def handle_MAIL(
        self, smtp: SMTP, session: Session, envelope: Envelope, address: str, mail_options: list[str]
    ) -> str:
        if not self._server.eightbitmime and "BODY=8BITMIME" in mail_options:
            return "555 5.5.4 BODY=8BITMIME not supported"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self, smtp: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        reply = self._server.rcpt_replies.get(address.lower())
        if reply is not None and not reply.startswith("2"):
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return reply or "250 2.1.5 OK"

    async def handle_DATA(self, smtp: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(smtp, _Session)
        content = envelope.original_content or b""
        transaction = Transaction(
            mail_from=_reverse_path(envelope.mail_from),
            mail_options=tuple(envelope.mail_options),
            rcpt_tos=tuple(envelope.rcpt_tos),
            rcpt_options=tuple(envelope.rcpt_options),
            data=bytes(content),
            tls=_tls_of(smtp.transport) if smtp.transport is not None else None,
        )
        reply = self._server.data_reply
        if reply is not None and not reply.startswith("2"):
            self._server._update(smtp.record, lambda r: r.refused.append(transaction))
            return reply
        self._server._update(smtp.record, lambda r: r.transactions.append(transaction))
        return reply or f"250 2.0.0 OK queued as {len(self._server.transactions())}"

    async def handle_RSET(self, smtp: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(smtp, _Session)

        def count(record: _ConnectionLog) -> None:
            record.rsets += 1

        self._server._update(smtp.record, count)
        return "250 2.0.0 OK"

    async def handle_exception(self, error: Exception) -> str:
        if isinstance(error, TLSSetupException):
            # The client rejected our certificate: an expected outcome here, not a crash.
            log.info("scripted SMTP server: TLS handshake failed: %r", error.__cause__)
        else:
            log.exception("scripted SMTP server: session error")
        return "451 4.3.0 Session error"


def _authenticate(
    smtp: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
) -> AuthResult:
    assert isinstance(smtp, _Session)
    return smtp.check_credentials(mechanism, auth_data)


class _Session(SMTP):
    """aiosmtpd's protocol with per-connection records, AUTH recording and reply delays."""

    _numbers = itertools.count(1)

    def __init__(
        self,
        server: ScriptedSmtpServer,
        handler: _Handler,
        registry: set[_Session | _Refusal],
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, **kwargs)
        self._server = server
        self._registry = registry
        self.number = next(self._numbers)
        self.record = _ConnectionLog(peer=("", 0), local=("", 0))
        self._lost: asyncio.Future[None] = self.loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Called twice on a STARTTLS connection: first with the TCP transport, then with the TLS
        # one once the handshake is done.
        upgrading = self.transport is not None
        super().connection_made(transport)
        if not upgrading:
            self.record = self._server._open(transport)
            self._registry.add(self)
            task = self._handler_coroutine
            if task is not None:
                # aiosmtpd re-raises ConnectionResetError out of the session task; retrieve it
                # so it is not reported as "Task exception was never retrieved".
                task.add_done_callback(_consume_result)
        else:
            tls = _tls_of(transport)
            self._server._update(self.record, lambda r: setattr(r, "tls", tls))

    def connection_lost(self, error: Exception | None) -> None:
        super().connection_lost(error)
        self._registry.discard(self)
        self._server._update(self.record, lambda r: setattr(r, "closed", True))
        if not self._lost.done():
            self._lost.set_result(None)

    def tls_active(self) -> bool:
        return self.transport is not None and _tls_of(self.transport) is not None

    async def push(self, status: Any) -> None:
        # Delay whole replies only: a multi-line EHLO reply waits once, before its last line.
        if self._server.reply_delay and _is_last_line(status):
            await asyncio.sleep(self._server.reply_delay)
        await super().push(_wire(status) if isinstance(status, str) else status)

    async def check_auth_needed(self, caller_method: str) -> bool:
        # aiosmtpd's auth_required warns when TLS is not also required (and warnings are errors
        # in the tests), so the rule is applied here instead.
        assert self.session is not None
        if self._server.auth is not None and not self.session.authenticated:
            await self.push(_REPLY_AUTH_REQUIRED)
            return True
        return False

    async def smtp_AUTH(self, arg: str) -> None:
        words = (arg or "").split()
        mechanism = words[0].upper() if words else ""
        tls = self.tls_active()
        attempt = AuthAttempt(mechanism, tls, _initial_username(mechanism, words[1:]), success=False)
        self._server._update(self.record, lambda r: r.auth_attempts.append(attempt))
        if self._server.auth is None:
            await self.push(_REPLY_AUTH_NOT_OFFERED)
            return
        if self._server.auth_require_tls and not tls:
            await self.push(_REPLY_ENCRYPTION_REQUIRED)
            return
        await super().smtp_AUTH(arg)

    def check_credentials(self, mechanism: str, auth_data: Any) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        username = auth_data.login.decode("utf-8", errors="replace")
        password = auth_data.password.decode("utf-8", errors="replace")
        expected = (self._server.auth or {}).get(username)
        success = expected is not None and expected == password

        def note(record: _ConnectionLog) -> None:
            last = record.auth_attempts[-1]
            record.auth_attempts[-1] = AuthAttempt(last.mechanism, last.tls, username, success)
            if success:
                record.auth_user = username

        self._server._update(self.record, note)
        # handled=False: aiosmtpd then answers 535 itself.
        return AuthResult(success=success, handled=False, auth_data=username if success else None)

    def hang_up(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def finished(self) -> asyncio.Future[Any]:
        """Completes once the transport is gone and the session task has unwound."""
        waits: list[asyncio.Future[Any]] = [self._lost]
        if self._handler_coroutine is not None:
            waits.append(self._handler_coroutine)
        return asyncio.gather(*waits, return_exceptions=True)


class _Refusal(asyncio.Protocol):
    """A server that answers the connection with a failing greeting and hangs up."""

    def __init__(self, server: ScriptedSmtpServer, registry: set[_Session | _Refusal], greeting: str) -> None:
        self._server = server
        self._registry = registry
        self._greeting = greeting
        self._transport: asyncio.BaseTransport | None = None
        self._lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        self._record = self._server._open(transport)
        self._registry.add(self)
        self._pending = asyncio.get_running_loop().call_later(self._server.reply_delay, self._refuse)

    def _refuse(self) -> None:
        transport = self._transport
        if isinstance(transport, asyncio.WriteTransport) and not transport.is_closing():
            transport.write(_wire(self._greeting).encode("ascii") + b"\r\n")
            transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._pending is not None:
            self._pending.cancel()
        self._registry.discard(self)
        self._server._update(self._record, lambda r: setattr(r, "closed", True))
        if not self._lost.done():
            self._lost.set_result(None)

    def hang_up(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def finished(self) -> asyncio.Future[None]:
        return self._lost


def _consume_result(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()


def _tls_of(transport: asyncio.BaseTransport) -> TlsInfo | None:
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    cipher = ssl_object.cipher()
    return TlsInfo(version=str(ssl_object.version()), cipher=str(cipher[0]) if cipher else "")


def _address(value: Any) -> tuple[str, int]:
    if isinstance(value, tuple) and len(value) >= 2:
        return str(value[0]), int(value[1])
    return "", 0


def _initial_username(mechanism: str, rest: list[str]) -> str | None:
    """The username in an AUTH initial response, so a refused attempt still says who tried."""
    if not rest:
        return None
    try:
        decoded = base64.b64decode(rest[0], validate=True)
    except (binascii.Error, ValueError):
        return None
    if mechanism == "PLAIN":
        parts = decoded.split(b"\x00")
        return parts[1].decode("utf-8", errors="replace") if len(parts) == 3 else None
    if mechanism == "LOGIN":
        return decoded.decode("utf-8", errors="replace")
    return None


def _reverse_path(mail_from: str | None) -> str:
    # aiosmtpd records the null reverse-path `MAIL FROM:<>` as the string "<>".
    if not mail_from or mail_from == "<>":
        return ""
    return mail_from


def _is_reply(reply: str, *, failing: bool) -> bool:
    """One reply of one or more lines ("\n" between them): one code, "-" after it on every line
    but the last (RFC 5321 §4.2.1)."""
    lines = reply.split("\n")
    code = lines[0][:3]
    if not code.isdigit() or "\r" in reply:
        return False
    for number, line in enumerate(lines, start=1):
        separator = line[3:4]
        expected = ("", " ") if number == len(lines) else ("-",)
        if line[:3] != code or separator not in expected:
            return False
    return code[0] in "45" if failing else code[0] in "245"


def _wire(reply: str) -> str:
    return reply.replace("\n", "\r\n")


def _is_last_line(status: Any) -> bool:
    if isinstance(status, bytes):
        status = status.decode("ascii", errors="replace")
    last = str(status).rsplit("\n", 1)[-1]
    return last[3:4] != "-"
