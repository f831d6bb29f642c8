"""The SMTP listener (aiosmtpd) in front of the inbound use case: RCPT rules, size cap, STARTTLS,
a per-IP connection limit, and a reply to every DATA that never lets a report crash the server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from libs.failures import dependency_failure
from libs.return_path import ReturnPathConfig
from services.inbound.recipients import Rcpt, TokenOpener, accept_rcpt

__all__ = ["InboundListener"]

_log = logging.getLogger(__name__)

_OK = "250 2.0.0 OK"
_NO_SUCH_USER = "550 5.1.1 No such recipient here"
_TRY_LATER = "451 4.3.0 Temporary failure, try again later"
_UNPROCESSABLE = "550 5.6.0 Report could not be processed"
_TOO_MANY = b"421 4.7.0 Too many connections from your address, try again later\r\n"

Take = Callable[[bytes, Sequence[Rcpt]], Awaitable[str]]


class _Handler:
    def __init__(self, take: Take, config: ReturnPathConfig, tokens: TokenOpener) -> None:
        self._take = take
        self._config = config
        self._tokens = tokens
        # Reports being processed; shutdown waits for them to get their reply.
        self._active = 0
        self.idle = asyncio.Event()
        self.idle.set()

    def _rcpt(self, address: str) -> Rcpt | None:
        return accept_rcpt(address, self._config, self._tokens)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if self._rcpt(address) is None:
            return _NO_SUCH_USER
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content or b""
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        rcpts = [r for r in (self._rcpt(a) for a in envelope.rcpt_tos) if r is not None]
        self._active += 1
        self.idle.clear()
        try:
            await self._take(raw, rcpts)
        except Exception as exc:
            dependency = dependency_failure(exc)
            if dependency is not None:
                # The sender keeps the report and retries: nothing is lost while PostgreSQL is away.
                _log.warning("inbound report not stored: %s", dependency.message)
                return _TRY_LATER
            _log.exception("inbound report could not be processed")
            return _UNPROCESSABLE
        finally:
            self._active -= 1
            if not self._active:
                self.idle.set()
        return _OK


class InboundListener:
    def __init__(
        self,
        take: Take,
        *,
        host: str,
        port: int,
        hostname: str,
        return_path: ReturnPathConfig,
        tokens: TokenOpener,
        max_message_bytes: int,
        max_connections_per_ip: int,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._handler = _Handler(take, return_path, tokens)
        self._host = host
        self._port = port
        self._hostname = hostname
        self._max_bytes = max_message_bytes
        self._max_per_ip = max_connections_per_ip
        self._tls = tls
        self._per_ip: Counter[str] = Counter()
        self._sessions: set[_Smtp] = set()
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._session, host=self._host, port=self._port)
        _log.info("inbound SMTP listening on %s:%d", self._host, self.port)

    def _session(self) -> _Smtp:
        return _Smtp(
            self,
            self._handler,
            hostname=self._hostname,
            ident="Postwire inbound",
            data_size_limit=self._max_bytes,
            enable_SMTPUTF8=True,
            decode_data=False,
            tls_context=self._tls,
            require_starttls=False,
            # Reports come from MTAs; nothing here is a submission port.
            auth_required=False,
            auth_require_tls=True,
            timeout=120,
        )

    def admit(self, session: _Smtp, ip: str) -> bool:
        """Count a new connection from `ip`; False when it is one over the limit."""
        if self._per_ip[ip] >= self._max_per_ip:
            return False
        self._per_ip[ip] += 1
        self._sessions.add(session)
        return True

    def release(self, session: _Smtp, ip: str) -> None:
        if session in self._sessions:
            self._sessions.discard(session)
            self._per_ip[ip] -= 1
            if self._per_ip[ip] <= 0:
                del self._per_ip[ip]

    async def stop(self, grace: float = 5.0) -> None:
        """Stop accepting, give reports being processed `grace` seconds to get their reply, hang up."""
        if self._server is None:
            return
        self._server.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._handler.idle.wait(), grace)
        for session in list(self._sessions):
            session.hang_up()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 2.0)


class _Smtp(SMTP):
    """aiosmtpd's session with the per-IP limit: a connection over it is told 421 and closed
    before the greeting."""

    def __init__(self, owner: InboundListener, handler: Any, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._owner = owner
        self._ip = ""
        self._admitted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = self.transport is None
        super().connection_made(transport)
        if not first:
            return  # the TLS transport after STARTTLS: the same connection
        peer = transport.get_extra_info("peername")
        self._ip = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        self._admitted = self._owner.admit(self, self._ip)
        if not self._admitted:
            _log.warning("inbound connection from %s refused: over the per-address limit", self._ip)
            if self._handler_coroutine is not None:
                self._handler_coroutine.cancel()
            assert isinstance(transport, asyncio.WriteTransport)
            transport.write(_TOO_MANY)
            transport.close()

    def connection_lost(self, error: Exception | None) -> None:
        if self._admitted:
            self._admitted = False
            self._owner.release(self, self._ip)
        super().connection_lost(error)

    def hang_up(self) -> None:
        if self.transport is not None:
            self.transport.close()
