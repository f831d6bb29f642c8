"""A real HTTP/1.1 endpoint on loopback for webhook tests: records every request (headers and
raw body, so signatures can be checked over the exact bytes) and answers per path from a
script (status, delay, extra headers), then 200 once the script is used up."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from dataclasses import dataclass, field

__all__ = ["Answer", "Received", "WebhookReceiver"]


@dataclass(frozen=True, slots=True)
class Answer:
    status: int = 200
    delay: float = 0.0
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b"ok"


@dataclass(frozen=True, slots=True)
class Received:
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes


@dataclass
class WebhookReceiver:
    host: str = "127.0.0.1"
    port: int = 0
    requests: list[Received] = field(default_factory=list)
    _scripts: dict[str, list[Answer]] = field(default_factory=lambda: defaultdict(list))
    _server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    def script(self, path: str, *answers: Answer) -> None:
        self._scripts[path].extend(answers)

    def at(self, path: str) -> list[Received]:
        return [r for r in self.requests if r.path == path]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            _, path, _ = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    name, value = line.split(":", 1)
                    headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.requests.append(Received(path, headers, body))
            script = self._scripts[path]
            answer = script.pop(0) if script else Answer()
            if answer.delay:
                await asyncio.sleep(answer.delay)
            extra = "".join(f"{k}: {v}\r\n" for k, v in answer.headers)
            writer.write(
                f"HTTP/1.1 {answer.status} X\r\nContent-Length: {len(answer.body)}\r\nConnection: close\r\n{extra}\r\n".encode()
                + answer.body
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()
