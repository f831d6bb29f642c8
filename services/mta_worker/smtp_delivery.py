"""aiosmtplib adapter: one SMTP transaction to the relay, outcome per recipient.

Raw bytes never reach the socket outside aiosmtplib, which dot-stuffs and normalises line
endings (RELIABILITY finding 11).
"""

from __future__ import annotations

import aiosmtplib

from services.mta_worker.smtp_outcome import Reply, parse_reply

__all__ = ["Relay", "send_transaction"]


class Relay:
    def __init__(self, host: str, port: int, *, timeout: float, helo_name: str) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self.helo_name = helo_name


async def send_transaction(
    relay: Relay, /, *, envelope_from: str, recipients: list[str], data: bytes, smtputf8: bool
) -> dict[str, Reply]:
    """Deliver `data` to every recipient in one transaction; returns each recipient's reply."""
    client = aiosmtplib.SMTP(
        hostname=relay.host,
        port=relay.port,
        timeout=relay.timeout,
        local_hostname=relay.helo_name,
        start_tls=None,  # opportunistic: STARTTLS when the relay offers it
        validate_certs=False,
    )
    try:
        await client.connect()
    except (aiosmtplib.SMTPException, OSError) as exc:
        failure = _failure_reply(exc)
        return dict.fromkeys(recipients, failure)
    try:
        options = ["SMTPUTF8"] if smtputf8 else []
        try:
            refused, response = await client.sendmail(envelope_from, recipients, data, mail_options=options)
        except aiosmtplib.SMTPNotSupported:
            # The relay cannot carry an internationalised address: retrying will not change that.
            return dict.fromkeys(
                recipients, Reply(553, "5.6.7", "SMTPUTF8 not supported by the receiving server")
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            return {r.recipient: parse_reply(r.code, r.message) for r in exc.recipients}
        except aiosmtplib.SMTPResponseException as exc:
            return dict.fromkeys(recipients, parse_reply(exc.code, exc.message))
        except (aiosmtplib.SMTPException, OSError) as exc:
            return dict.fromkeys(recipients, _failure_reply(exc))
        # sendmail returns the final DATA reply's text; reaching here means it was a 2xx.
        accepted = parse_reply(250, response)
        replies = dict.fromkeys(recipients, accepted)
        for recipient, reply in refused.items():
            replies[recipient] = parse_reply(reply.code, reply.message)
        return replies
    finally:
        try:
            await client.quit()
        except (aiosmtplib.SMTPException, OSError):
            client.close()


def _failure_reply(exc: BaseException) -> Reply:
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return parse_reply(exc.code, exc.message)
    return Reply(code=0, enhanced="", text=f"connection failed: {type(exc).__name__}")
