"""A TCP proxy on loopback that can take a dependency "down" and bring it back.

Put between services and PostgreSQL or NATS, it makes an outage exact and repeatable whether the
server is embedded or external: `down()` resets every open connection and stops listening (new
connections are refused, as from a stopped server); `up()` listens again on the same port.
It runs its own event loop in a thread, so tests with any loop (or none) can drive it.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from concurrent.futures import Future
from typing import Any

__all__ = ["TcpProxy"]


class TcpProxy:
    def __init__(self, target_host: str, target_port: int, *, listen_host: str = "127.0.0.1") -> None:
        self._target = (target_host, target_port)
        self._listen_host = listen_host
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-proxy", daemon=True)
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    # -- control, from any thread ------------------------------------------------------------

    def start(self) -> TcpProxy:
        self._thread.start()
        self._run(self._listen())
        return self

    def down(self) -> None:
        self._run(self._down())

    def up(self) -> None:
        self._run(self._listen())

    def stop(self) -> None:
        self._run(self._shut())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def url_for(self, url: str) -> str:
        """`url` (scheme://[user@]host:port/rest) with host and port replaced by the proxy's."""
        scheme, _, rest = url.partition("://")
        authority, slash, path = rest.partition("/")
        user, at, _hostport = authority.rpartition("@")
        return f"{scheme}://{user}{at}{self._listen_host}:{self.port}{slash}{path}"

    def _run(self, coro: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout=10)

    # -- the proxy, on its own loop ----------------------------------------------------------

    async def _listen(self) -> None:
        if self._server is not None:
            return
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self._listen_host, self.port))
        self._server = await asyncio.start_server(self._accept, sock=sock)
        self.port = int(sock.getsockname()[1])

    async def _down(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            _reset(writer)
        self._writers.clear()

    async def _shut(self) -> None:
        # Every connection task ends, and every transport closes, before the loop is closed: a
        # transport left to the garbage collector raises ResourceWarning in whatever test runs then.
        await self._down()
        tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(0)  # closed transports release their sockets on the next iteration

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        writers = [client_writer]
        self._writers.add(client_writer)
        try:
            try:
                server_reader, server_writer = await asyncio.open_connection(*self._target)
            except OSError:
                _reset(client_writer)
                return
            writers.append(server_writer)
            self._writers.add(server_writer)
            if self._server is None:
                # Went down while this connection was being made: it dies with the others.
                _reset(client_writer)
                _reset(server_writer)
                return
            await asyncio.gather(
                _pipe(client_reader, server_writer),
                _pipe(server_reader, client_writer),
                return_exceptions=True,
            )
        finally:
            for writer in writers:
                self._writers.discard(writer)
                writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        if not writer.is_closing():
            writer.close()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST rather than FIN, as a crashed peer's kernel would."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        except OSError:
            pass
    writer.transport.abort()
