"""DSN (RFC 3464) and ARF (RFC 5965) reports built with the standard library, shaped like the
ones real receivers send, for the inbound tests."""

from __future__ import annotations

import email.policy
from email.message import Message
from email.mime.base import MIMEBase
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.parser import BytesParser

__all__ = ["arf_report", "dsn_report", "original_message"]


def original_message(*, return_path: str = "", feedback_id: str = "", to: str = "rcpt@example.net") -> bytes:
    lines = []
    if return_path:
        lines.append(f"Return-Path: <{return_path}>")
    lines += [
        "From: Sender <sender@example.com>",
        f"To: {to}",
        "Subject: Your receipt",
        "Message-ID: <abc@postwire.localhost>",
    ]
    if feedback_id:
        lines.append(f"X-Postwire-Feedback-Id: {feedback_id}")
    lines += ["MIME-Version: 1.0", "Content-Type: text/plain", "", "Thanks for your order.", ""]
    return "\r\n".join(lines).encode()


def _block(fields: list[tuple[str, str]]) -> Message:
    block = Message()
    for name, value in fields:
        block[name] = value
    return block


def dsn_report(
    *,
    recipient: str,
    action: str = "failed",
    status: str = "5.1.1",
    diagnostic: str = "smtp; 550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown in virtual mailbox table",
    remote_mta: str = "dns; mx1.example.net",
    original: bytes | None = None,
    headers_only: bool = False,
    sender: str = "MAILER-DAEMON@mx.example.net",
    to: str = "",
) -> bytes:
    """A Postfix-shaped multipart/report; report-type=delivery-status."""
    report = MIMEMultipart("report", report_type="delivery-status")
    report["From"] = f"Mail Delivery System <{sender}>"
    if to:
        report["To"] = to
    report["Subject"] = "Undelivered Mail Returned to Sender"
    report.attach(
        MIMEText(
            "This is the mail system at host mx.example.net.\n\nI'm sorry to have to inform you that your "
            "message could not\nbe delivered to one or more recipients.\n"
        )
    )
    status_part = MIMEBase("message", "delivery-status")
    fields = [
        ("Final-Recipient", f"rfc822; {recipient}"),
        ("Original-Recipient", f"rfc822;{recipient}"),
        ("Action", action),
        ("Status", status),
    ]
    if remote_mta:
        fields.append(("Remote-MTA", remote_mta))
    if diagnostic:
        fields.append(("Diagnostic-Code", diagnostic.format(rcpt=recipient)))
    status_part.set_payload(
        [
            _block(
                [
                    ("Reporting-MTA", "dns; mx.example.net"),
                    ("Arrival-Date", "Mon, 30 Nov 2026 10:00:00 +0000"),
                ]
            ),
            _block(fields),
        ]
    )
    report.attach(status_part)
    if original is not None:
        report.attach(_original_part(original, headers_only))
    return report.as_bytes(policy=email.policy.SMTP)


def arf_report(
    *,
    original: bytes,
    feedback_type: str = "abuse",
    rcpt_to: str = "",
    mail_from: str = "",
    headers_only: bool = True,
) -> bytes:
    """A Yahoo/Microsoft-shaped feedback report; report-type=feedback-report."""
    report = MIMEMultipart("report", report_type="feedback-report")
    report["From"] = "feedback@arf.mail.example.net"
    report["Subject"] = "FW: Your receipt"
    report.attach(
        MIMEText("This is an email abuse report for an email message received from IP 192.0.2.1.\n")
    )
    fields = [("Feedback-Type", feedback_type), ("User-Agent", "ExampleFBL/1.0"), ("Version", "1")]
    if mail_from:
        fields.append(("Original-Mail-From", f"<{mail_from}>"))
    if rcpt_to:
        fields.append(("Original-Rcpt-To", f"<{rcpt_to}>"))
    fields += [("Arrival-Date", "Mon, 30 Nov 2026 10:00:00 +0000"), ("Source-IP", "192.0.2.1")]
    feedback = MIMEBase("message", "feedback-report")
    feedback.set_payload([_block(fields)])
    report.attach(feedback)
    report.attach(_original_part(original, headers_only))
    return report.as_bytes(policy=email.policy.SMTP)


def _original_part(original: bytes, headers_only: bool) -> Message:
    if headers_only:
        head = original.split(b"\r\n\r\n", 1)[0].decode() + "\r\n"
        return MIMEText(head, "rfc822-headers")
    return MIMEMessage(BytesParser(policy=email.policy.compat32).parsebytes(original))
