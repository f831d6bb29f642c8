"""aiosmtplib adapter: one SMTP connection to an MX host or a relay, carrying any number of
one-recipient transactions back to back.

Opening a session settles everything that belongs to the connection, not to a message: the TCP
connect and the greeting, EHLO, the TLS policy (opportunistic, required and verified, implicit)
and AUTH, which is never sent before TLS. A failure there is a `SessionFailure` that says whether
the next MX host is worth trying. Each phase has its own time-out (Postfix's defaults, see
`Timeouts`), as RFC 5321 §4.5.3.2 asks: "per-command timeouts rather than … the entire
transaction".

A transaction reports the reply for its recipient. Raw bytes never reach the socket outside
aiosmtplib's protocol, and the body is dot-stuffed and its line endings normalised exactly as
aiosmtplib's own DATA does (RELIABILITY finding 11). `past_final_dot` tells the caller whether
the final "." has been written: before it, abandoning the connection delivers nothing; after it,
the message may already be the server's.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import re
import socket
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast

import aiosmtplib
from aiosmtplib.email import quote_address
from aiosmtplib.protocol import COMMAND_INJECTION_REGEX, PERIOD_REGEX
from postwire.v1 import message_pb2

from libs.config import env_float
from libs.mail.dkim import wire_form
from libs.mail.smtp_outcome import Reply, parse_reply
from services.mta_worker import pipelining

__all__ = [
    "Endpoint",
    "SessionBroken",
    "SessionFailure",
    "SmtpSession",
    "Timeouts",
    "TlsMode",
    "lost_reply",
]

_log = logging.getLogger(__name__)

# The body goes out in chunks, each of which must drain within the data time-out: Postfix's
# smtp_data_xfer_timeout bounds a transfer that makes no progress, not a slow but moving one.
_CHUNK = 64 * 1024

# A dot-atom local part at a dot-atom domain, which is nearly every address: aiosmtplib's
# quote_address (email.utils.parseaddr) gives back exactly this between angle brackets, at ~20x
# the cost, twice per transaction. Anything else still goes through quote_address.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_ADDRESS = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds per phase; defaults are Postfix's smtp_*_timeout values."""

    connect: float = 30.0
    greeting: float = 300.0
    ehlo: float = 300.0
    starttls: float = 300.0
    mail: float = 300.0
    rcpt: float = 300.0
    data_init: float = 120.0
    data_xfer: float = 180.0
    data_done: float = 600.0
    rset: float = 20.0
    quit: float = 300.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Timeouts:
        defaults = cls()

        def read(phase: str) -> float:
            name = f"POSTWIRE_SMTP_{phase.upper()}_TIMEOUT_SECONDS"
            return env_float(env, name, getattr(defaults, phase), minimum=0.1)

        return cls(**{phase: read(phase) for phase in cls.__dataclass_fields__})

    @classmethod
    def env_all(cls, seconds: float) -> dict[str, str]:
        """Every phase at one value, as settings: for tests and fault runs that need time-outs
        short enough to observe."""
        return {
            f"POSTWIRE_SMTP_{phase.upper()}_TIMEOUT_SECONDS": str(seconds)
            for phase in cls.__dataclass_fields__
        }


class TlsMode(enum.Enum):
    # Plain text only: a relay on loopback (the capture inbox), by explicit configuration.
    NONE = "none"
    # STARTTLS when offered, certificate not checked; a failed handshake is retried once in plain
    # text (Postfix's "may").
    OPPORTUNISTIC = "opportunistic"
    # STARTTLS with a verified certificate for the host name, else no delivery (defer).
    REQUIRED = "required"
    # TLS from the first byte (port 465), verified.
    IMPLICIT = "implicit"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where to connect and how. For MX delivery `address` is the IP that passed the destination
    check (connected to as is, never resolved again) and `host` the MX name the certificate must
    carry; for a relay both are its configured name."""

    host: str
    address: str
    port: int
    tls: TlsMode
    # The verifying context for REQUIRED and IMPLICIT (system CAs or a configured bundle).
    verify: ssl.SSLContext | None = None
    credentials: tuple[str, str] | None = None

    def __repr__(self) -> str:
        # Credentials stay out of logs and tracebacks.
        return f"Endpoint({self.host!r}, {self.address!r}, {self.port}, {self.tls.value})"


@dataclass(frozen=True, slots=True)
class _Envelope:
    """One transaction's MAIL and RCPT, as the session sends them."""

    sender: str
    recipient: str
    options: list[str]
    encoding: str


class SessionFailure(Exception):
    """The session could not be opened. `try_next`: another MX host may do better (connection
    refused, 4xx/5xx greeting, TLS that a required policy cannot accept); `config`: the failure is
    on the sending side (TLS policy, relay credentials), not the recipient's."""

    def __init__(self, reply: Reply, *, try_next: bool, config: bool = False) -> None:
        super().__init__(reply.text)
        self.reply = reply
        self.try_next = try_next
        self.config = config


class SessionBroken(Exception):
    """The connection failed during a transaction; `reply` describes it for the recipient."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.text)
        self.reply = reply


class SessionStale(Exception):
    """A reused connection failed (or was closed with 421) at MAIL, before any transaction began:
    it died while idle. Nothing was sent for the recipient; open a fresh session and try again."""


def _unverified_context() -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


_OPPORTUNISTIC = _unverified_context()


class SmtpSession:
    def __init__(
        self, endpoint: Endpoint, client: aiosmtplib.SMTP, timeouts: Timeouts, *, verified: bool
    ) -> None:
        self.endpoint = endpoint
        self._client = client
        self._timeouts = timeouts
        self.transactions = 0
        self.idle_since = time.monotonic()
        self.past_final_dot = False
        # False while a transaction is left open on the server (MAIL or RCPT accepted, no reply
        # to "." yet): only then does the next one need RSET first.
        self.clean = True
        self.remote = _remote(endpoint, client, verified=verified)

    # Opening

    @classmethod
    async def open(cls, endpoint: Endpoint, *, helo_name: str, timeouts: Timeouts) -> SmtpSession:
        """Connect, greet, EHLO, TLS per policy, AUTH. Raises SessionFailure."""
        try:
            return await cls._open(endpoint, helo_name, timeouts, tls=endpoint.tls)
        except _PlainRetry:
            # Opportunistic TLS whose handshake failed: once more in plain text, as Postfix does.
            _log.info("TLS handshake with %s failed; retrying in plain text", endpoint.host)
            return await cls._open(endpoint, helo_name, timeouts, tls=TlsMode.NONE)

    @classmethod
    async def _open(
        cls, endpoint: Endpoint, helo_name: str, timeouts: Timeouts, *, tls: TlsMode
    ) -> SmtpSession:
        sock = await _connect(endpoint, timeouts.connect)
        client = aiosmtplib.SMTP(
            hostname=endpoint.host,
            local_hostname=helo_name,
            timeout=timeouts.ehlo,
            use_tls=tls is TlsMode.IMPLICIT,
            start_tls=False,
            tls_context=endpoint.verify if tls is TlsMode.IMPLICIT else None,
            sock=sock,
        )
        try:
            await client.connect(timeout=timeouts.greeting)
        except aiosmtplib.SMTPConnectResponseError as exc:
            # A 4xx or 5xx greeting: this host will not talk to us now; the next MX may
            # (Postfix's smtp_skip_5xx_greeting).
            raise SessionFailure(parse_reply(exc.code, exc.message), try_next=True) from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            if tls is TlsMode.IMPLICIT and _is_tls_error(exc):
                raise SessionFailure(_tls_reply(endpoint, exc), try_next=True, config=True) from exc
            raise SessionFailure(_failure_reply(exc, endpoint), try_next=True) from exc
        try:
            await client._ehlo_or_helo_if_needed()
            verified = tls is TlsMode.IMPLICIT
            if tls in (TlsMode.OPPORTUNISTIC, TlsMode.REQUIRED):
                verified = await _start_tls(client, endpoint, tls, timeouts)
            if endpoint.credentials is not None:
                await _authenticate(client, endpoint, timeouts)
        except SessionFailure:
            _hang_up(client)
            raise
        except _PlainRetry:
            _hang_up(client)
            raise
        except (aiosmtplib.SMTPException, OSError) as exc:
            _hang_up(client)
            if isinstance(exc, aiosmtplib.SMTPResponseException):
                raise SessionFailure(parse_reply(exc.code, exc.message), try_next=True) from exc
            raise SessionFailure(_failure_reply(exc, endpoint), try_next=True) from exc
        except BaseException:
            _hang_up(client)
            raise
        return cls(endpoint, client, timeouts, verified=verified)

    # Transactions

    @property
    def connected(self) -> bool:
        return self._client.is_connected

    async def deliver(self, envelope_from: str, recipient: str, data: bytes, *, smtputf8: bool) -> Reply:
        """One transaction for one recipient; the reply that settles it. Raises SessionBroken
        when the connection fails (past_final_dot says whether the "." had been written)."""
        client = self._client
        self.past_final_dot = False
        reused = self.transactions > 0
        self.transactions += 1
        if smtputf8 and not client.supports_extension("smtputf8"):
            # The server cannot carry an internationalised address or header: retrying will not
            # change that.
            return Reply(553, "5.6.7", "SMTPUTF8 not supported by the receiving server")
        normalised = _normalised(data)
        limit = _size_limit(client)
        if limit and len(normalised) > limit:
            return Reply(
                552,
                "5.3.4",
                f"message size {len(normalised)} exceeds the receiving server's limit of {limit}",
            )
        options: list[str] = []
        if client.supports_extension("size"):
            # RFC 1870: octets as transmitted, CRLF included (aiosmtplib's sendmail counts the same).
            options.append(f"SIZE={len(normalised)}")
        if not normalised.isascii() and client.supports_extension("8bitmime"):
            options.append("BODY=8BITMIME")
        if smtputf8:
            options.append("SMTPUTF8")
        encoding = "utf-8" if smtputf8 else "ascii"
        try:
            if client.supports_extension("pipelining"):
                send_envelope = self._envelope_pipelined
            else:
                send_envelope = self._envelope
            refused = await send_envelope(
                client, _Envelope(envelope_from, recipient, options, encoding), reused=reused
            )
            if refused is not None:
                return refused
            protocol = client.protocol
            if protocol is None:
                raise aiosmtplib.SMTPServerDisconnected("connection lost before the message body")
            self.past_final_dot = True
            await self._write_body(protocol, _dot_stuffed(normalised) + b".\r\n")
            final = await protocol.read_response(timeout=self._timeouts.data_done)
            self.clean = True
            return parse_reply(final.code, final.message)
        except (aiosmtplib.SMTPException, OSError) as exc:
            _hang_up(client)
            if self.past_final_dot:
                reply = lost_reply(exc)
                _log.warning(
                    "no reply to the final '.' from %s (%s): may be delivered twice",
                    self.endpoint.host,
                    reply.text,
                )
                raise SessionBroken(reply) from exc
            raise SessionBroken(_failure_reply(exc, self.endpoint)) from exc
        finally:
            self.idle_since = time.monotonic()

    async def _envelope(self, client: aiosmtplib.SMTP, envelope: _Envelope, *, reused: bool) -> Reply | None:
        """MAIL, RCPT and DATA one at a time; the reply that ends the transaction, or None once
        the server waits for the body. Raises SessionStale when a reused connection turns out
        dead at MAIL."""
        try:
            await client.mail(
                envelope.sender,
                options=envelope.options,
                encoding=envelope.encoding,
                timeout=self._timeouts.mail,
            )
        except aiosmtplib.SMTPResponseException as exc:
            if exc.code == 421:
                client.close()  # the server is closing the session
                if reused:
                    raise SessionStale(exc.message) from exc
            return parse_reply(exc.code, exc.message)
        except (aiosmtplib.SMTPServerDisconnected, ConnectionError) as exc:
            if not reused:
                raise
            client.close()
            raise SessionStale(type(exc).__name__) from exc
        self.clean = False
        try:
            await client.rcpt(envelope.recipient, encoding=envelope.encoding, timeout=self._timeouts.rcpt)
        except aiosmtplib.SMTPResponseException as exc:
            if exc.code == 421:
                _hang_up(client)  # the server is closing the session
            return parse_reply(exc.code, exc.message)
        start = await client.execute_command(b"DATA", timeout=self._timeouts.data_init)
        return None if start.code == 354 else parse_reply(start.code, start.message)

    async def _envelope_pipelined(
        self, client: aiosmtplib.SMTP, envelope: _Envelope, *, reused: bool
    ) -> Reply | None:
        """MAIL, RCPT and DATA in one write (RFC 2920), replies read in order and judged as
        `_envelope` judges them: one write and one wake-up instead of three of each."""
        protocol = client.protocol
        if protocol is None:
            raise aiosmtplib.SMTPServerDisconnected("Server not connected")
        commands = [
            _command(b"MAIL", b"FROM:" + _quoted(envelope.sender, envelope), *_ascii(envelope.options)),
            _command(b"RCPT", b"TO:" + _quoted(envelope.recipient, envelope)),
            b"DATA\r\n",
        ]
        t = self._timeouts
        try:
            replies = await pipelining.exchange(protocol, commands, (t.mail, t.rcpt, t.data_init))
        except (aiosmtplib.SMTPServerDisconnected, ConnectionError) as exc:
            if not reused:
                raise
            client.close()
            raise SessionStale(type(exc).__name__) from exc
        if replies.failure is not None:
            # Replies not read are replies a later command would be paired with.
            _hang_up(client)
        try:
            mail = replies.reply(0)
        except (aiosmtplib.SMTPServerDisconnected, ConnectionError) as exc:
            if not reused:
                raise
            raise SessionStale(type(exc).__name__) from exc
        if mail.code != 250:
            if mail.code == 421:
                client.close()  # the server is closing the session
                if reused:
                    raise SessionStale(mail.message)
            elif len(replies.replies) == 3 and replies.replies[2].code == 354:
                # A server that took DATA anyway waits for a body nobody should get.
                _hang_up(client)
            return parse_reply(mail.code, mail.message)
        self.clean = False
        rcpt = replies.reply(1)
        data = replies.reply(2)
        if rcpt.code not in (250, 251):
            if rcpt.code == 421 or data.code == 354:
                # Closing, or (RFC 2920 §3.1) a server that took DATA with no recipient: it
                # waits for a body nobody should get, so hang up rather than send one.
                _hang_up(client)
            return parse_reply(rcpt.code, rcpt.message)
        return None if data.code == 354 else parse_reply(data.code, data.message)

    async def _write_body(self, protocol: aiosmtplib.protocol.SMTPProtocol, body: bytes) -> None:
        # The reply to "." may arrive while the last chunk drains, before read_response is
        # awaited; aiosmtplib drops a reply that arrives while no response is marked pending
        # (its own execute_command marks it before writing), so mark it first.
        protocol._response_pending = True
        for start in range(0, len(body), _CHUNK):
            protocol.write(body[start : start + _CHUNK])
            if not protocol._paused and not protocol._connection_lost:
                # Below the transport's high-water mark, as a message of a few KB always is:
                # the drain would return at once, after a task and a timer of its own.
                continue
            try:
                await asyncio.wait_for(protocol._drain_helper(), self._timeouts.data_xfer)
            except TimeoutError as exc:
                raise aiosmtplib.SMTPTimeoutError("no progress sending the message body") from exc

    async def reset(self) -> bool:
        """RSET before the next transaction; False (and closed) if the connection is not usable."""
        try:
            response = await self._client.rset(timeout=self._timeouts.rset)
        except (aiosmtplib.SMTPException, OSError):
            _hang_up(self._client)
            return False
        if response.code != 250:
            _hang_up(self._client)
            return False
        self.clean = True
        return True

    async def quit(self) -> None:
        try:
            with contextlib.suppress(aiosmtplib.SMTPException, OSError):
                await self._client.quit(timeout=self._timeouts.quit)
        finally:
            # Also when cancelled (the pool's shutdown cancels a QUIT that takes too long).
            self._client.close()

    def close(self) -> None:
        _hang_up(self._client)


def _command(*args: bytes) -> bytes:
    # aiosmtplib's own check (execute_command): no CR, LF or other control byte inside a command.
    for arg in args:
        if COMMAND_INJECTION_REGEX.search(arg):
            raise ValueError("Command arg contains a prohibited control character")
    return b" ".join(args) + b"\r\n"


def _quoted(address: str, envelope: _Envelope) -> bytes:
    if _PLAIN_ADDRESS.fullmatch(address):
        return b"<" + address.encode("ascii") + b">"
    return quote_address(address).encode(envelope.encoding)


def _normalised(data: bytes) -> bytes:
    """aiosmtplib's normalize_message_line_endings (bare CR or LF as CRLF, a final CRLF added),
    without its regular expression pass over a message already in that form, as a signed one is."""
    data = wire_form(data)
    return data if data.endswith(b"\r\n") else data + b"\r\n"


def _dot_stuffed(body: bytes) -> bytes:
    """A "." that starts a line doubled (RFC 5321 4.5.2), as aiosmtplib's DATA does; a body with
    none (the usual case) is returned without a regular expression pass over it."""
    if body.startswith(b".") or b"\n." in body:
        return PERIOD_REGEX.sub(b"..", body)
    return body


def _ascii(options: list[str]) -> list[bytes]:
    return [option.encode("ascii") for option in options]


def _hang_up(client: aiosmtplib.SMTP) -> None:
    """Drop a connection that failed or is abandoned, at once: `close()` on a TLS session first
    waits (up to 30 s) for the peer's close_notify, which a broken peer never sends."""
    transport = client.transport
    # Not isinstance(asyncio.Transport): uvloop's transports are not its subclasses.
    if transport is not None and hasattr(transport, "abort"):
        cast(asyncio.Transport, transport).abort()
    client.close()


class _PlainRetry(Exception):
    """Opportunistic TLS failed in the handshake: reconnect without it."""


async def _connect(endpoint: Endpoint, timeout: float) -> socket.socket:
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(endpoint.address, endpoint.port, type=socket.SOCK_STREAM), timeout
        )
    except (OSError, TimeoutError) as exc:
        raise SessionFailure(
            Reply(0, "", f"cannot resolve {endpoint.address}: {type(exc).__name__}"), try_next=True
        ) from exc
    last: BaseException | None = None
    for family, kind, proto, _, address in infos:
        sock = socket.socket(family, kind, proto)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(sock, address), timeout)
            return sock
        except (OSError, TimeoutError) as exc:
            sock.close()
            last = exc
        except BaseException:
            sock.close()
            raise
    reply = _failure_reply(last or OSError("no address"), endpoint)
    raise SessionFailure(reply, try_next=True)


async def _start_tls(client: aiosmtplib.SMTP, endpoint: Endpoint, tls: TlsMode, timeouts: Timeouts) -> bool:
    """STARTTLS per policy; whether the certificate was verified."""
    if not client.supports_extension("starttls"):
        if tls is TlsMode.REQUIRED:
            raise SessionFailure(
                Reply(0, "4.7.10", f"TLS is required but {endpoint.host} does not offer STARTTLS"),
                try_next=True,
                config=True,
            )
        return False
    context = endpoint.verify if tls is TlsMode.REQUIRED else _OPPORTUNISTIC
    try:
        await client.starttls(server_hostname=endpoint.host, tls_context=context, timeout=timeouts.starttls)
    except aiosmtplib.SMTPResponseException as exc:
        if tls is TlsMode.REQUIRED:
            raise SessionFailure(
                parse_reply(exc.code, f"TLS is required but STARTTLS was refused: {exc.message}"),
                try_next=True,
                config=True,
            ) from exc
        raise _PlainRetry() from exc
    except (aiosmtplib.SMTPException, OSError) as exc:
        if tls is TlsMode.REQUIRED:
            raise SessionFailure(_tls_reply(endpoint, exc), try_next=True, config=True) from exc
        raise _PlainRetry() from exc
    # RFC 3207 §4.2: what the server said before TLS no longer counts.
    await client.ehlo(timeout=timeouts.ehlo)
    return tls is TlsMode.REQUIRED


async def _authenticate(client: aiosmtplib.SMTP, endpoint: Endpoint, timeouts: Timeouts) -> None:
    assert endpoint.credentials is not None
    if client.get_transport_info("sslcontext") is None:
        # Configuration forbids credentials without TLS; this guards the invariant at the socket.
        raise SessionFailure(
            Reply(0, "4.7.0", f"refusing to send credentials to {endpoint.host} without TLS"),
            try_next=False,
            config=True,
        )
    if not client.supports_extension("auth"):
        raise SessionFailure(
            Reply(0, "4.7.0", f"{endpoint.host} offers no AUTH, but credentials are configured"),
            try_next=False,
            config=True,
        )
    username, password = endpoint.credentials
    methods = [m for m in ("plain", "login") if m in client.server_auth_methods]
    if not methods:
        raise SessionFailure(
            Reply(0, "4.7.0", f"{endpoint.host} offers neither AUTH PLAIN nor LOGIN"),
            try_next=False,
            config=True,
        )
    try:
        if methods[0] == "plain":
            await client.auth_plain(username, password, timeout=timeouts.ehlo)
        else:
            await client.auth_login(username, password, timeout=timeouts.ehlo)
    except aiosmtplib.SMTPResponseException as exc:
        # The reply is the server's (535 5.7.8 …); the credentials themselves are never echoed.
        text = f"authentication to {endpoint.host} failed: {exc.message}"
        reply = parse_reply(exc.code, text)
        # A refused login is our configuration, never the recipient's fault: defer, do not bounce.
        raise SessionFailure(Reply(0, reply.enhanced, reply.text), try_next=False, config=True) from exc


def _size_limit(client: aiosmtplib.SMTP) -> int:
    value = client.esmtp_extensions.get("size", "")
    try:
        return int(value.split()[0]) if value else 0
    except ValueError:
        return 0


def _remote(endpoint: Endpoint, client: aiosmtplib.SMTP, *, verified: bool) -> message_pb2.RemoteServer:
    remote = message_pb2.RemoteServer(host=endpoint.host, port=endpoint.port, tls_verified=verified)
    with contextlib.suppress(aiosmtplib.SMTPException, OSError):
        peer = client.get_transport_info("peername")
        if peer:
            remote.address = str(peer[0])
        tls = client.get_transport_info("ssl_object")
        if tls is not None:
            remote.tls_version = tls.version() or ""
            cipher = tls.cipher()
            remote.tls_cipher = cipher[0] if cipher else ""
    return remote


def _is_tls_error(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _tls_reply(endpoint: Endpoint, exc: BaseException) -> Reply:
    detail = type(exc).__name__
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            detail = f"certificate verification failed: {seen.verify_message}"
            break
        if isinstance(seen, ssl.SSLError):
            detail = f"TLS handshake failed: {seen.reason or type(seen).__name__}"
            break
        seen = seen.__cause__ or seen.__context__
    return Reply(
        0, "4.7.5" if "certificate" in detail else "4.7.0", f"TLS with {endpoint.host} failed: {detail}"
    )


def lost_reply(exc: BaseException) -> Reply:
    """No reply to the final "." (time-out or dropped connection): the server may have the message."""
    return Reply(
        code=0,
        enhanced="",
        text=f"connection lost after the final '.' ({type(exc).__name__}): may be delivered twice",
        after_final_dot=True,
    )


def _failure_reply(exc: BaseException, endpoint: Endpoint) -> Reply:
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return parse_reply(exc.code, exc.message)
    return Reply(
        code=0,
        enhanced="",
        text=f"connection to {endpoint.host} ({endpoint.address}) failed: {type(exc).__name__}",
    )
