"""RFC 3464 reports and the common non-standard bounces, parsed into failed recipients."""

from __future__ import annotations

from postwire.v1 import message_pb2

from libs.mail.dsn import parse_bounce, reply_of
from libs.mail.smtp_outcome import Verdict, classify
from libs.testing.reports import dsn_report, original_message


def test_rfc3464_failed_recipient_with_its_diagnostic_and_remote_mta() -> None:
    raw = dsn_report(
        recipient="gone@example.net", original=original_message(return_path="bounces+t@h.example")
    )
    report = parse_bounce(raw)
    assert report is not None and report.format == "rfc3464"
    (failure,) = report.failures
    assert failure.recipient == "gone@example.net"
    assert failure.status == "5.1.1"
    assert failure.remote_mta == "mx1.example.net"
    reply = reply_of(failure)
    assert (reply.code, reply.enhanced) == (550, "5.1.1")
    assert reply.text.startswith("5.1.1 <gone@example.net>: Recipient address rejected")
    assert classify(reply) == classify(reply).__class__(Verdict.BOUNCED, message_pb2.BOUNCE_CATEGORY_HARD)
    assert report.original is not None and report.original.return_path == "bounces+t@h.example"


def test_delayed_is_not_a_bounce() -> None:
    report = parse_bounce(dsn_report(recipient="slow@example.net", action="delayed", status="4.4.1"))
    assert report is not None
    assert report.failures == () and report.others == 1


def test_gmail_multiline_diagnostic_and_status_without_diagnostic() -> None:
    gmail = dsn_report(
        recipient="nobody@gmail.com",
        diagnostic="smtp; 550-5.1.1 The email account that you tried to reach does not exist. Please try 550 5.1.1 double-checking",
    )
    (failure,) = parse_bounce(gmail).failures  # type: ignore[union-attr]
    assert (reply_of(failure).code, reply_of(failure).enhanced) == (550, "5.1.1")
    bare = dsn_report(recipient="x@example.net", status="5.2.2", diagnostic="")
    (failure,) = parse_bounce(bare).failures  # type: ignore[union-attr]
    reply = reply_of(failure)
    assert (reply.code, reply.enhanced) == (550, "5.2.2")


def test_mailbox_full_bounce_is_soft() -> None:
    raw = dsn_report(recipient="full@example.net", status="5.2.2", diagnostic="smtp; 552 5.2.2 Mailbox full")
    (failure,) = parse_bounce(raw).failures  # type: ignore[union-attr]
    assert classify(reply_of(failure)).category != message_pb2.BOUNCE_CATEGORY_HARD


QMAIL = b"""From: MAILER-DAEMON@mail.example.org
To: bounces+tok@bounces.example
Subject: failure notice

Hi. This is the qmail-send program at mail.example.org.
I'm afraid I wasn't able to deliver your message to the following addresses.
This is a permanent error; I've given up. Sorry it didn't work out.

<nouser@example.org>:
192.0.2.25 does not like recipient.
Remote host said: 550 5.1.1 <nouser@example.org>... User unknown
Giving up on 192.0.2.25.

--- Below this line is a copy of the message.

Return-Path: <bounces+tok@bounces.example>
Subject: hello
"""

EXIM = b"""From: Mail Delivery System <Mailer-Daemon@mx.example.com>
To: bounces+tok@bounces.example
Subject: Mail delivery failed: returning message to sender

This message was created automatically by mail delivery software.

A message that you sent could not be delivered to one or more of its
recipients. This is a permanent error. The following address(es) failed:

  missing@example.com
    host mx2.example.com [192.0.2.7]
    SMTP error from remote mail server after RCPT TO:<missing@example.com>:
    550 5.1.1 <missing@example.com>: Recipient address rejected: User unknown

------ This is a copy of the message, including all the headers. ------

Subject: hello
"""

EXIM_DELAY = b"""From: Mail Delivery System <Mailer-Daemon@mx.example.com>
Subject: Warning: message 1abc-000 delayed 24 hours

This message was created automatically by mail delivery software.
A message that you sent has not yet been delivered to one or more of its
recipients after more than 24 hours on the queue on mx.example.com.
"""

PLAIN = b"""From: postmaster@example.biz
Subject: Delivery failure

Your message to <someone@example.biz> could not be delivered.
The server answered: 550 5.1.1 Mailbox does not exist
"""


def test_qmail_bounce() -> None:
    report = parse_bounce(QMAIL)
    assert report is not None and report.format == "qmail"
    (failure,) = report.failures
    assert failure.recipient == "nouser@example.org"
    assert (reply_of(failure).code, reply_of(failure).enhanced) == (550, "5.1.1")


def test_exim_bounce_and_exim_delay_warning() -> None:
    report = parse_bounce(EXIM)
    assert report is not None and report.format == "exim"
    (failure,) = report.failures
    assert failure.recipient == "missing@example.com"
    assert failure.remote_mta == "mx2.example.com"
    assert (reply_of(failure).code, reply_of(failure).enhanced) == (550, "5.1.1")
    delay = parse_bounce(EXIM_DELAY)
    assert delay is not None and delay.failures == ()


def test_plain_text_bounce_with_a_reply_in_the_body() -> None:
    report = parse_bounce(PLAIN)
    assert report is not None and report.format == "text"
    (failure,) = report.failures
    assert failure.recipient == "someone@example.biz"
    assert classify(reply_of(failure)).verdict is Verdict.BOUNCED


def test_ordinary_mail_and_garbage_are_not_bounces() -> None:
    assert parse_bounce(b"Subject: hi\r\n\r\nSee you at 5.\r\n") is None
    assert parse_bounce(b"\x00\xff\xfe garbage \r\n\r\n\x80") is None
    assert (
        parse_bounce(b"Content-Type: multipart/report; report-type=delivery-status\r\n\r\nno parts") is None
    )
    assert parse_bounce(b"") is None


GLOBAL = """From: MAILER-DAEMON@mx.example.jp
Subject: Undelivered Mail Returned to Sender
MIME-Version: 1.0
Content-Type: multipart/report; report-type=global-delivery-status; boundary="b"

--b
Content-Type: text/plain; charset=utf-8

Your message could not be delivered.

--b
Content-Type: message/global-delivery-status

Reporting-MTA: dns; mx.example.jp

Final-Recipient: utf-8; 用户@example.jp
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; 550 5.1.1 mailbox unavailable

--b--
""".encode()


def test_rfc6533_global_delivery_status() -> None:
    report = parse_bounce(GLOBAL)
    assert report is not None and report.format == "rfc3464"
    (failure,) = report.failures
    assert failure.recipient == "用户@example.jp"
    assert (reply_of(failure).code, reply_of(failure).enhanced) == (550, "5.1.1")
