"""ESMTP PIPELINING (RFC 2920) on an aiosmtplib connection: the commands of one envelope (MAIL,
RCPT, DATA) in one write, their replies read back in order, each within its own time-out.

aiosmtplib's protocol parses one reply per awaited read and drops bytes that arrive while a
parsed reply waits to be picked up, so replies to pipelined commands that arrive in separate
segments would be lost. For the span of one exchange the transport's protocol is therefore a
collector that keeps every byte and parses replies in order; the connection's own protocol gets
the transport back before anything else is written (the body goes through it as before).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import cast

from aiosmtplib import SMTPReadTimeoutError, SMTPResponseException, SMTPServerDisconnected
from aiosmtplib.protocol import MAX_LINE_LENGTH, MAX_RESPONSE_LENGTH, SMTPProtocol
from aiosmtplib.response import SMTPResponse
from aiosmtplib.typing import SMTPStatus

__all__ = ["Exchange", "exchange"]


class Exchange:
    """The replies that arrived, in order, and why the rest did not (None when all did)."""

    def __init__(self, replies: list[SMTPResponse], failure: Exception | None) -> None:
        self.replies = replies
        self.failure = failure

    def reply(self, index: int) -> SMTPResponse:
        """The index-th reply; raises the failure that kept it from arriving."""
        if index < len(self.replies):
            return self.replies[index]
        raise self.failure or SMTPServerDisconnected("Connection lost")


class _Collector(asyncio.Protocol):
    def __init__(self, inner: SMTPProtocol) -> None:
        self._inner = inner
        self._buffer = bytearray()
        self.replies: list[SMTPResponse] = []
        self.failure: Exception | None = None
        self._wake: asyncio.Future[None] | None = None

    # What the transport tells a protocol: replies are kept, the rest goes to the connection's own.

    def data_received(self, data: bytes) -> None:
        if self.failure is not None:
            return
        self._buffer.extend(data)
        try:
            while (reply := self._parse()) is not None:
                self.replies.append(reply)
        except SMTPResponseException as exc:
            self._fail(exc)
        if len(self._buffer) > MAX_RESPONSE_LENGTH:
            self._fail(SMTPResponseException(SMTPStatus.invalid_response.value, "Response too long"))
        self._notify()

    def eof_received(self) -> bool:
        self._fail(SMTPServerDisconnected("Unexpected EOF received"))
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        lost = SMTPServerDisconnected("Connection lost")
        lost.__cause__ = exc
        self._fail(lost)
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    # Reading

    async def wait_for(self, count: int, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.replies) < count and self.failure is None:
            self._wake = loop.create_future()
            try:
                await asyncio.wait_for(self._wake, max(0.0, deadline - loop.time()))
            except TimeoutError as exc:
                self.failure = SMTPReadTimeoutError("Timed out waiting for server response")
                raise self.failure from exc
            finally:
                self._wake = None

    def leftover(self) -> bool:
        return bool(self._buffer)

    def _fail(self, exc: Exception) -> None:
        if self.failure is None:
            self.failure = exc
        self._notify()

    def _notify(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    def _parse(self) -> SMTPResponse | None:
        # The same reading as aiosmtplib's: multi-line replies joined by "\n", "NNN-" continues.
        code = -1
        message = bytearray()
        offset = 0
        while (end := self._buffer.find(b"\n", offset)) != -1:
            line = bytes(self._buffer[offset : end + 1])
            if len(line) > MAX_LINE_LENGTH:
                raise SMTPResponseException(SMTPStatus.invalid_response.value, "Response too long")
            try:
                code = int(line[:3])
            except ValueError:
                text = line.decode("utf-8", errors="ignore")
                raise SMTPResponseException(
                    SMTPStatus.invalid_response.value, f"Malformed SMTP response line: {text}"
                ) from None
            offset += len(line)
            if message:
                message.extend(b"\n")
            message.extend(line[4:].strip(b" \t\r\n"))
            if line[3:4] != b"-":
                del self._buffer[:offset]
                return SMTPResponse(code, bytes(message).decode("utf-8", "surrogateescape"))
        return None


async def exchange(protocol: SMTPProtocol, commands: Sequence[bytes], timeouts: Sequence[float]) -> Exchange:
    """Write `commands` (each a full line) at once and read one reply per command, the i-th
    within timeouts[i] of the one before. A reply the server sends before it has read the rest
    (421 and hang up) is kept; what kept the others from arriving is the exchange's failure."""
    # uvloop's transports are not asyncio.Transport subclasses, but have everything used here.
    transport = cast(asyncio.Transport | None, protocol.transport)
    if transport is None or transport.is_closing():
        raise SMTPServerDisconnected("Connection lost")
    collector = _Collector(protocol)
    transport.set_protocol(collector)
    try:
        protocol.write(b"".join(commands))
        for count, timeout in enumerate(timeouts, start=1):
            await collector.wait_for(count, timeout)
            if collector.failure is not None:
                break
    except (SMTPReadTimeoutError, SMTPServerDisconnected) as exc:
        # The replies that did arrive still count; this is why the others did not.
        if collector.failure is None:
            collector.failure = exc
    finally:
        transport.set_protocol(protocol)
    failure = collector.failure
    if failure is None and collector.leftover():
        # More than was asked for: the connection can no longer be trusted to pair replies.
        failure = SMTPResponseException(
            SMTPStatus.invalid_response.value, "unexpected data after the replies"
        )
    return Exchange(collector.replies[: len(timeouts)], failure)
