"""A small HTTP/1.1 client for one origin: h11 (the protocol state machine httpx itself uses)
over asyncio streams, with kept-alive connections.

Why not httpx per request: profiled in the events service, httpx + httpcore + anyio cost ~40 % of
the process's CPU for one webhook POST per message (request and response models, cookie
extraction, pool bookkeeping, a socket readability probe per reuse, the request's headers and
body in separate writes, and an INFO log line per request). Here a request is one write and the
response is parsed by h11 as it arrives. What stays with the caller (libs/http_guard): address
checks, the deadline, header validation. Redirects are never followed (the status is returned).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass

import h11

__all__ = ["HttpFailed", "OriginPool", "Reply"]

_READ_CHUNK = 65536


class HttpFailed(Exception):
    """The request did not complete: `kind` is ConnectError, ReadError, WriteError or
    RemoteProtocolError, `detail` the socket, TLS or protocol error (never the URL)."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: list[tuple[str, str]]  # lower-case names, in order
    body: bytes  # at most the cap the caller gave


@dataclass(slots=True)
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    state: h11.Connection
    idle_since: float = 0.0

    def usable(self, now: float, expiry: float) -> bool:
        # The peer's FIN or unexpected bytes are seen here, before anything is written.
        return now - self.idle_since < expiry and not self.writer.is_closing() and not self.reader.at_eof()

    def close(self) -> None:
        self.writer.close()


class OriginPool:
    """Connections to one (scheme, address, port, host name): TLS is verified against the host
    name (SNI too) while the socket goes to the address the caller checked."""

    def __init__(
        self,
        address: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None,
        server_hostname: str | None,
        max_idle: int = 4,
        keepalive_expiry: float = 30.0,
    ) -> None:
        self._address = address
        self._port = port
        self._ssl = ssl_context
        self._server_hostname = server_hostname
        self._max_idle = max_idle
        self._expiry = keepalive_expiry
        self._idle: list[_Connection] = []
        self.in_flight = 0

    async def post(
        self, target: str, headers: Sequence[tuple[str, str]], body: bytes, *, max_body: int
    ) -> Reply:
        """POST once. A kept-alive connection the peer closed before answering a single byte is
        replaced by a fresh one and the request written again, once (the peer had closed it
        idle: the request was never read)."""
        request = h11.Request(
            method="POST",
            target=target,
            headers=[*headers, ("Content-Length", str(len(body)))],
        )
        conn = self._take()
        if conn is not None:
            try:
                return await self._exchange(conn, request, body, max_body)
            except _Unanswered:
                pass
            except HttpFailed as exc:
                if exc.kind != "WriteError":
                    raise
        conn = await self._connect()
        try:
            return await self._exchange(conn, request, body, max_body)
        except _Unanswered:
            raise HttpFailed(
                "RemoteProtocolError", "Server disconnected without sending a response"
            ) from None

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
        for conn in idle:
            with contextlib.suppress(Exception):
                await conn.writer.wait_closed()

    def _take(self) -> _Connection | None:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if conn.usable(now, self._expiry):
                return conn
            conn.close()
        return None

    async def _connect(self) -> _Connection:
        try:
            reader, writer = await asyncio.open_connection(
                self._address,
                self._port,
                ssl=self._ssl,
                server_hostname=self._server_hostname if self._ssl is not None else None,
            )
        except (OSError, ssl.SSLError) as exc:
            raise HttpFailed("ConnectError", _describe(exc)) from None
        return _Connection(reader, writer, h11.Connection(h11.CLIENT))

    async def _exchange(self, conn: _Connection, request: h11.Request, body: bytes, max_body: int) -> Reply:
        kept = False
        try:
            state = conn.state
            data = state.send(request) + state.send(h11.Data(data=body)) + state.send(h11.EndOfMessage())
            try:
                conn.writer.write(data)
                await conn.writer.drain()
            except (OSError, ssl.SSLError) as exc:
                raise HttpFailed("WriteError", _describe(exc)) from None
            reply, complete = await self._receive(conn, max_body)
            if complete and state.our_state is h11.DONE and state.their_state is h11.DONE:
                state.start_next_cycle()
                kept = self._keep(conn)
            return reply
        finally:
            if not kept:
                conn.close()

    async def _receive(self, conn: _Connection, max_body: int) -> tuple[Reply, bool]:
        state = conn.state
        response: h11.Response | None = None
        received = bytearray()
        got_bytes = False
        while True:
            try:
                event = state.next_event()
            except h11.RemoteProtocolError as exc:
                raise HttpFailed("RemoteProtocolError", str(exc)[:200]) from None
            if event is h11.NEED_DATA:
                try:
                    chunk = await conn.reader.read(_READ_CHUNK)
                except (OSError, ssl.SSLError) as exc:
                    if not got_bytes:
                        raise _Unanswered from None
                    raise HttpFailed("ReadError", _describe(exc)) from None
                if not chunk and not got_bytes:
                    raise _Unanswered
                got_bytes = got_bytes or bool(chunk)
                state.receive_data(chunk)
                continue
            if isinstance(event, h11.InformationalResponse):
                continue
            if isinstance(event, h11.Response):
                response = event
                continue
            if isinstance(event, h11.Data):
                received += event.data[: max_body - len(received)]
                if len(received) >= max_body:
                    # The rest is not read: the connection is dropped rather than drained.
                    return _reply(response, received), False
                continue
            if isinstance(event, h11.EndOfMessage):
                return _reply(response, received), True
            # h11.ConnectionClosed or PAUSED: nothing more on this connection.
            if response is None:
                raise HttpFailed("RemoteProtocolError", "Server disconnected without sending a response")
            return _reply(response, received), False

    def _keep(self, conn: _Connection) -> bool:
        if len(self._idle) >= self._max_idle:
            return False
        conn.idle_since = time.monotonic()
        self._idle.append(conn)
        return True


class _Unanswered(Exception):
    """The peer closed the connection before a byte of the response."""


def _reply(response: h11.Response | None, body: bytearray) -> Reply:
    if response is None:
        raise HttpFailed("RemoteProtocolError", "body without a response")
    headers = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in response.headers]
    return Reply(response.status_code, headers, bytes(body))


def _describe(exc: BaseException) -> str:
    return (str(exc) or type(exc).__name__)[:200]
