"""Abuse feedback reports (ARF, RFC 5965): a multipart/report of report-type feedback-report with
a human part, a message/feedback-report part and the original (message/rfc822 or its headers as
text/rfc822-headers); pure, stdlib `email` only."""

from __future__ import annotations

import email.policy
from dataclasses import dataclass
from email.message import Message
from email.parser import HeaderParser

from libs.mail.reports import OriginalHeaders, body_text, header, load, original_headers, report_parts

__all__ = ["COMPLAINT_TYPES", "FeedbackReport", "parse_arf"]

# RFC 5965 §7.3's registry (and RFC 6591's auth-failure): all but not-spam say the recipient, or
# the operator on their behalf, does not want this mail; auth-failure is about the sender's
# authentication, not the recipient.
COMPLAINT_TYPES = frozenset({"abuse", "fraud", "virus", "other"})


@dataclass(frozen=True, slots=True)
class FeedbackReport:
    feedback_type: str  # lowercased; '' when missing
    user_agent: str
    original_rcpt_to: str
    original_mail_from: str
    original: OriginalHeaders | None

    @property
    def is_complaint(self) -> bool:
        return self.feedback_type in COMPLAINT_TYPES


def parse_arf(raw: bytes) -> FeedbackReport | None:
    """The report in `raw`, or None when it is not a feedback report. Never raises."""
    try:
        parts = report_parts(load(raw), "feedback-report")
        if parts is None:
            return None
        fields = next((p for p in parts if p.get_content_type() == "message/feedback-report"), None)
        if fields is None:
            return None
        # The part's body is a header block; the email package parses it as a message of its own.
        payload = fields.get_payload()
        block = (
            payload[0] if isinstance(payload, list) and payload and isinstance(payload[0], Message) else None
        )
        if block is None:
            block = HeaderParser(policy=email.policy.compat32).parsestr(body_text(fields).lstrip("\r\n"))
        return FeedbackReport(
            feedback_type=header(block, "Feedback-Type").lower(),
            user_agent=header(block, "User-Agent"),
            original_rcpt_to=header(block, "Original-Rcpt-To").strip("<>"),
            original_mail_from=header(block, "Original-Mail-From").strip("<>"),
            original=original_headers(parts),
        )
    except Exception:
        return None
