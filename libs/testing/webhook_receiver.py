"""A real HTTP/1.1 endpoint on loopback for webhook tests (h11 over asyncio streams, in the
caller's event loop): records every request (headers and raw body, so signatures can be checked
over the exact bytes) and answers per path from a script, then `default` (200 "ok") once the
script is used up.

`script(path, Answer(503), Answer(302, headers={"Location": …}), Answer(200, delay=2))` queues
those answers, in order, for requests to `path`. An answer can wait before its status line
(`delay`), send a large body (`body_size` bytes of "x", streamed, for response caps) and send its
body slowly (`drip` seconds between 1 KiB chunks, for total-time bounds). Connections are kept
alive, as real endpoints do, so client connection reuse is visible in `connections`."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType

import h11

from libs.testing.polling import poll_until

__all__ = ["Answer", "Received", "WebhookReceiver"]

_CHUNK = 64 * 1024
_DRIP_CHUNK = 1024


@dataclass(frozen=True, slots=True)
class Answer:
    status: int = 200
    delay: float = 0.0
    headers: Mapping[str, str] | tuple[tuple[str, str], ...] = ()
    body: bytes = b"ok"
    body_size: int = 0  # instead of body: this many bytes of b"x", streamed
    drip: float = 0.0  # seconds between body chunks of 1 KiB

    def header_items(self) -> list[tuple[str, str]]:
        return list(self.headers.items()) if isinstance(self.headers, Mapping) else list(self.headers)


@dataclass(frozen=True, slots=True)
class Received:
    path: str  # the request target: path and query
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes
    method: str = "POST"
    time: float = 0.0  # time.time() when the whole request had arrived
    tls: bool = False
    peer: str = ""  # the client's address


@dataclass
class WebhookReceiver:
    """Options: `host` (127.0.0.1), `ssl_context` (serve https with this server context),
    `default` (the answer once a path's script is used up)."""

    __test__ = False

    host: str = "127.0.0.1"
    port: int = 0
    ssl_context: ssl.SSLContext | None = None
    default: Answer = field(default_factory=Answer)
    _requests: list[Received] = field(default_factory=list)
    _scripts: dict[str, list[Answer]] = field(default_factory=lambda: defaultdict(list))
    _connections: int = 0
    _live: dict[asyncio.Task[None], asyncio.StreamWriter] = field(default_factory=dict)
    _server: asyncio.Server | None = None

    async def start(self) -> WebhookReceiver:
        self._server = await asyncio.start_server(self._accept, self.host, self.port, ssl=self.ssl_context)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        """Stop listening and hang up on every client. Idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for task, writer in list(self._live.items()):
            # Abort, not close: a TLS close waits up to 30 s for the client's close_notify, and a
            # kept-alive client sends none.
            writer.transport.abort()
            task.cancel()
        await asyncio.gather(*self._live, return_exceptions=True)
        await server.wait_closed()

    async def __aenter__(self) -> WebhookReceiver:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def url(self, path: str = "/", *, host: str | None = None) -> str:
        """The URL of `path` here; `host` replaces the address with a name (resolved by a test DNS)."""
        scheme = "https" if self.ssl_context is not None else "http"
        name = host or (f"[{self.host}]" if ":" in self.host else self.host)
        return f"{scheme}://{name}:{self.port}{path}"

    def script(self, path: str, *answers: Answer) -> None:
        """Queue these answers, in order, for the next requests to `path`."""
        self._scripts[path].extend(answers)

    @property
    def requests(self) -> list[Received]:
        """Every request so far, oldest first."""
        return list(self._requests)

    def at(self, path: str) -> list[Received]:
        """The requests to `path` (the target, query included), oldest first."""
        return [r for r in self._requests if r.path == path]

    @property
    def connections(self) -> int:
        """How many TCP connections have been accepted."""
        return self._connections

    async def wait_for(
        self, count: int = 1, *, path: str | None = None, timeout: float = 30.0
    ) -> list[Received]:
        """Poll until `count` requests (to `path`, when given) have arrived; fails after `timeout`."""

        async def probe() -> list[Received]:
            arrived = self.requests if path is None else self.at(path)
            return arrived if len(arrived) >= count else []

        return await poll_until(
            probe, timeout=timeout, what=f"{count} request(s) at {self.url(path or '/')}", interval=0.02
        )

    # -- serving -----------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._live[task] = writer
        self._connections += 1
        try:
            await self._converse(reader, writer)
        except asyncio.CancelledError:
            pass  # stop(): this connection ends with the server, not as an error
        except (ConnectionError, h11.ProtocolError, ssl.SSLError):
            pass  # the client hung up or spoke nonsense: the test sees what was recorded
        finally:
            self._live.pop(task, None)
            writer.transport.abort()

    async def _converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = str(writer.get_extra_info("peername")[0])
        connection = h11.Connection(h11.SERVER)
        while True:
            request = await self._receive(connection, reader, peer)
            if request is None:
                return
            script = self._scripts[request.path]
            await self._answer(connection, writer, script.pop(0) if script else self.default)
            if connection.our_state is not h11.DONE or connection.their_state is not h11.DONE:
                return
            connection.start_next_cycle()

    async def _receive(
        self, connection: h11.Connection, reader: asyncio.StreamReader, peer: str
    ) -> Received | None:
        head: h11.Request | None = None
        body = bytearray()
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                connection.receive_data(await reader.read(_CHUNK))
            elif isinstance(event, h11.Request):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage) and head is not None:
                headers: dict[str, str] = {}
                for name, value in head.headers:
                    key, text = name.decode("ascii").lower(), value.decode("latin-1")
                    headers[key] = f"{headers[key]}, {text}" if key in headers else text
                request = Received(
                    path=head.target.decode("ascii"),
                    headers=headers,
                    body=bytes(body),
                    method=head.method.decode("ascii"),
                    time=time.time(),
                    tls=self.ssl_context is not None,
                    peer=peer,
                )
                self._requests.append(request)
                return request
            else:
                return None  # closed, or paused after a protocol switch we never agree to

    async def _answer(self, connection: h11.Connection, writer: asyncio.StreamWriter, answer: Answer) -> None:
        if answer.delay:
            await asyncio.sleep(answer.delay)
        size = answer.body_size or len(answer.body)
        headers = [*answer.header_items(), ("Content-Length", str(size))]
        writer.write(connection.send(h11.Response(status_code=answer.status, headers=headers)))
        chunk = _DRIP_CHUNK if answer.drip else _CHUNK
        sent = 0
        while sent < size:
            part = min(chunk, size - sent)
            data = b"x" * part if answer.body_size else answer.body[sent : sent + part]
            writer.write(connection.send(h11.Data(data=data)))
            await writer.drain()
            sent += part
            if answer.drip:
                await asyncio.sleep(answer.drip)
        writer.write(connection.send(h11.EndOfMessage()))
        await writer.drain()
