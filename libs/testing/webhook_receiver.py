"""A real HTTP/1.1 server on loopback for webhook tests, on its own thread and loop (h11 over
asyncio streams), scripted per path and recording every request it receives.

`script(path, Reply(503), Reply(302, headers={"Location": …}), Reply(200, delay=2))` gives those
replies in order to requests for `path`; once they are used up (or for a path never scripted) the
server answers `default` (200, empty). A reply can wait before its status line (`delay`), send a
large body (`body_size` bytes of "x", streamed, for response caps) and send its body slowly
(`drip` seconds between 1 KiB chunks, for total-time bounds)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType

import h11

from libs.testing.polling import poll_until

__all__ = ["Reply", "WebhookReceiver", "WebhookRequest"]

_READY_TIMEOUT = 10.0
_CHUNK = 64 * 1024
_DRIP_CHUNK = 1024


@dataclass(frozen=True, slots=True)
class Reply:
    status: int = 200
    delay: float = 0.0
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    body_size: int = 0  # instead of body: this many bytes of b"x", streamed
    drip: float = 0.0  # seconds between body chunks of 1 KiB


@dataclass(frozen=True, slots=True)
class WebhookRequest:
    method: str
    path: str  # the request target: path and query
    headers: Mapping[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes
    time: float  # time.time() when the whole request had arrived
    tls: bool
    peer: str  # the client's address


class WebhookReceiver:
    """Options: `host` (127.0.0.1), `ssl_context` (serve https with this server context),
    `default` (the reply once a path's script is used up)."""

    __test__ = False

    def __init__(
        self, *, host: str = "127.0.0.1", ssl_context: ssl.SSLContext | None = None, default: Reply = Reply()
    ) -> None:
        self.host = host
        self.ssl_context = ssl_context
        self.default = default
        self._port = 0
        self._lock = threading.Lock()
        self._scripts: dict[str, deque[Reply]] = {}
        self._requests: list[WebhookRequest] = []
        self._connections = 0
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._startup_error: BaseException | None = None

    @property
    def port(self) -> int:
        return self._port

    def url(self, path: str = "/", *, host: str | None = None) -> str:
        """The URL of `path` here; `host` replaces the address with a name (resolved by a test DNS)."""
        scheme = "https" if self.ssl_context is not None else "http"
        name = host or (f"[{self.host}]" if ":" in self.host else self.host)
        return f"{scheme}://{name}:{self._port}{path}"

    def script(self, path: str, *replies: Reply) -> None:
        """Replace `path`'s script: these replies, in order, to its next requests."""
        with self._lock:
            self._scripts[path] = deque(replies)

    def requests(self, path: str | None = None) -> list[WebhookRequest]:
        """Every request so far (for `path` only when given), oldest first."""
        with self._lock:
            return [r for r in self._requests if path is None or r.path == path]

    @property
    def connections(self) -> int:
        """How many TCP connections have been accepted."""
        with self._lock:
            return self._connections

    async def wait_for(
        self, count: int = 1, *, path: str | None = None, timeout: float = 30.0
    ) -> list[WebhookRequest]:
        """Poll (without blocking the caller's loop) until `count` requests have arrived."""

        async def probe() -> list[WebhookRequest]:
            arrived = self.requests(path)
            return arrived if len(arrived) >= count else []

        return await poll_until(
            probe, timeout=timeout, what=f"{count} request(s) at {self.url(path or '/')}", interval=0.05
        )

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> WebhookReceiver:
        if self._thread is not None:
            raise RuntimeError("WebhookReceiver is already running")
        ready = threading.Event()
        thread = threading.Thread(target=self._run, args=(ready,), name="webhook-receiver", daemon=True)
        thread.start()
        if not ready.wait(_READY_TIMEOUT):
            raise TimeoutError(f"webhook receiver did not listen within {_READY_TIMEOUT}s")
        if self._startup_error is not None:
            thread.join()
            raise self._startup_error
        self._thread = thread
        return self

    def close(self) -> None:
        """Stop listening, hang up on every client and join the thread. Idempotent."""
        thread, loop, stop = self._thread, self._loop, self._stop
        if thread is None:
            return
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already closed
                loop.call_soon_threadsafe(stop.set)
        thread.join()
        self._thread = self._loop = self._stop = None

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- event-loop thread -----------------------------------------------------------

    def _run(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._serve(ready))
        except Exception as error:
            if ready.is_set():
                raise
            self._startup_error = error
            ready.set()
        finally:
            loop.close()

    async def _serve(self, ready: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        live: dict[asyncio.Task[None], asyncio.StreamWriter] = {}

        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            live[task] = writer
            try:
                await self._connection(reader, writer)
            except asyncio.CancelledError:
                pass  # close(): this connection ends with the server, not as an error
            finally:
                live.pop(task, None)

        server = await asyncio.start_server(accept, self.host, 0, ssl=self.ssl_context)
        self._port = server.sockets[0].getsockname()[1]
        ready.set()
        await self._stop.wait()
        server.close()
        for task, writer in list(live.items()):
            # Abort, not close: a TLS close waits up to 30 s for the client's close_notify, and
            # a kept-alive client sends none.
            writer.transport.abort()
            task.cancel()
        await asyncio.gather(*live, return_exceptions=True)
        await server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self._lock:
            self._connections += 1
        peer = str(writer.get_extra_info("peername")[0])
        connection = h11.Connection(h11.SERVER)
        try:
            while True:
                request = await self._receive(connection, reader, peer)
                if request is None:
                    return
                await self._reply(connection, writer, self._next_reply(request.path))
                if connection.our_state is not h11.DONE or connection.their_state is not h11.DONE:
                    return
                connection.start_next_cycle()
        except (ConnectionError, h11.ProtocolError, ssl.SSLError, asyncio.IncompleteReadError):
            return  # the client hung up or spoke nonsense: the test sees what was recorded
        finally:
            writer.transport.abort()

    async def _receive(
        self, connection: h11.Connection, reader: asyncio.StreamReader, peer: str
    ) -> WebhookRequest | None:
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
                    key = name.decode("ascii").lower()
                    text = value.decode("latin-1")
                    headers[key] = f"{headers[key]}, {text}" if key in headers else text
                request = WebhookRequest(
                    method=head.method.decode("ascii"),
                    path=head.target.decode("ascii"),
                    headers=headers,
                    body=bytes(body),
                    time=time.time(),
                    tls=self.ssl_context is not None,
                    peer=peer,
                )
                with self._lock:
                    self._requests.append(request)
                return request
            else:
                return None  # closed, or paused after a protocol switch we never agree to

    def _next_reply(self, path: str) -> Reply:
        with self._lock:
            script = self._scripts.get(path)
            return script.popleft() if script else self.default

    async def _reply(self, connection: h11.Connection, writer: asyncio.StreamWriter, reply: Reply) -> None:
        if reply.delay:
            await asyncio.sleep(reply.delay)
        size = reply.body_size or len(reply.body)
        headers = [(name, value) for name, value in reply.headers.items()]
        headers.append(("Content-Length", str(size)))
        writer.write(connection.send(h11.Response(status_code=reply.status, headers=headers)))
        chunk = _DRIP_CHUNK if reply.drip else _CHUNK
        sent = 0
        while sent < size:
            part = min(chunk, size - sent)
            data = reply.body[sent : sent + part] if not reply.body_size else b"x" * part
            writer.write(connection.send(h11.Data(data=data)))
            await writer.drain()
            sent += part
            if reply.drip:
                await asyncio.sleep(reply.drip)
        writer.write(connection.send(h11.EndOfMessage()))
        await writer.drain()
