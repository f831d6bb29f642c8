"""aiosmtplib adapter: one SMTP transaction to the relay, each reply handed on as it arrives.

Raw bytes never reach the socket outside aiosmtplib's protocol, and the body is dot-stuffed and
its line endings normalised exactly as aiosmtplib's own DATA does (RELIABILITY finding 11). The
transaction is driven step by step rather than through `sendmail`, for two reasons: a RCPT
refusal or the reply to "." is reported the moment it arrives (so it can be made durable before
anything else happens: the duplicate window is the reply to "." and no wider), and the caller can
tell whether the final "." has been written (before it, abandoning the connection delivers
nothing; after it, the message may already be the relay's).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

import aiosmtplib
from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings

from services.mta_worker.smtp_outcome import Reply, parse_reply

__all__ = ["OnReply", "Relay", "Transaction"]

_log = logging.getLogger(__name__)

# Called with the recipients a reply settles and that reply; awaited before the session goes on.
OnReply = Callable[[Sequence[str], Reply], Awaitable[None]]


class Relay:
    def __init__(self, host: str, port: int, *, timeout: float, helo_name: str) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self.helo_name = helo_name


class Transaction:
    """One message to every recipient over one connection; every recipient is reported once."""

    def __init__(
        self,
        relay: Relay,
        /,
        *,
        envelope_from: str,
        recipients: list[str],
        data: bytes,
        smtputf8: bool,
        on_reply: OnReply,
    ) -> None:
        self._relay = relay
        self._from = envelope_from
        self._recipients = recipients
        self._data = data
        self._smtputf8 = smtputf8
        self._on_reply = on_reply
        self.reported: set[str] = set()
        # Set just before the body and its final "." are written: from here on the relay may
        # hold the message whatever happens to this connection.
        self.past_final_dot = False

    @property
    def unreported(self) -> list[str]:
        return [r for r in self._recipients if r not in self.reported]

    async def _report(self, recipients: Sequence[str], reply: Reply) -> None:
        fresh = [r for r in recipients if r not in self.reported]
        if fresh:
            self.reported.update(fresh)
            await self._on_reply(fresh, reply)

    async def run(self) -> None:
        client = aiosmtplib.SMTP(
            hostname=self._relay.host,
            port=self._relay.port,
            timeout=self._relay.timeout,
            local_hostname=self._relay.helo_name,
            start_tls=None,  # opportunistic: STARTTLS when the relay offers it
            validate_certs=False,
        )
        try:
            await client.connect()
        except (aiosmtplib.SMTPException, OSError) as exc:
            await self._report(self._recipients, _failure_reply(exc))
            return
        try:
            await self._converse(client)
        except (aiosmtplib.SMTPException, OSError) as exc:
            client.close()
            if self.past_final_dot:
                reply = lost_reply(exc)
                _log.warning("no reply to the final '.' (%s): may be delivered twice", reply.text)
            else:
                reply = _failure_reply(exc)
            await self._report(self.unreported, reply)
            return
        except BaseException:
            # Cancelled (shutdown) or a bug: hang up at once; a polite QUIT could wait minutes.
            client.close()
            raise
        try:
            await client.quit()
        except (aiosmtplib.SMTPException, OSError):
            client.close()

    async def _converse(self, client: aiosmtplib.SMTP) -> None:
        options = ["SMTPUTF8"] if self._smtputf8 else []
        # After a STARTTLS the extensions must be asked for again; sendmail does the same.
        await client._ehlo_or_helo_if_needed()
        if self._smtputf8 and not client.supports_extension("smtputf8"):
            # The relay cannot carry an internationalised address: retrying will not change that.
            await self._report(
                self._recipients, Reply(553, "5.6.7", "SMTPUTF8 not supported by the receiving server")
            )
            return
        encoding = "utf-8" if self._smtputf8 else "ascii"
        normalised = normalize_message_line_endings(self._data)
        stuffed = PERIOD_REGEX.sub(b"..", normalised)
        if client.supports_extension("size"):
            # RFC 1870: octets as transmitted, CRLF included (aiosmtplib's sendmail counts the same).
            options.insert(0, f"size={len(normalised)}")
        try:
            await client.mail(self._from, options=options, encoding=encoding)
        except aiosmtplib.SMTPResponseException as exc:
            await self._report(self._recipients, parse_reply(exc.code, exc.message))
            return
        accepted: list[str] = []
        for recipient in self._recipients:
            try:
                await client.rcpt(recipient, encoding=encoding)
                accepted.append(recipient)
            except aiosmtplib.SMTPRecipientRefused as exc:
                await self._report([recipient], parse_reply(exc.code, exc.message))
        if not accepted:
            return
        start = await client.execute_command(b"DATA")
        if start.code != 354:
            await self._report(accepted, parse_reply(start.code, start.message))
            return
        protocol = client.protocol
        assert protocol is not None
        self.past_final_dot = True
        protocol.write(stuffed + b".\r\n")
        final = await protocol.read_response(timeout=self._relay.timeout)
        await self._report(accepted, parse_reply(final.code, final.message))


def lost_reply(exc: BaseException) -> Reply:
    """No reply to the final "." (time-out or dropped connection): the relay may have the message."""
    return Reply(
        code=0,
        enhanced="",
        text=f"connection lost after the final '.' ({type(exc).__name__}): may be delivered twice",
        after_final_dot=True,
    )


def _failure_reply(exc: BaseException) -> Reply:
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return parse_reply(exc.code, exc.message)
    return Reply(code=0, enhanced="", text=f"connection failed: {type(exc).__name__}")
