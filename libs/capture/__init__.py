"""Mail capture for tests and local development: a scriptable SMTP sink and a web inbox."""

from __future__ import annotations

from libs.capture.inbox_web import InboxWebServer
from libs.capture.smtp_sink import DATA_SIZE_LIMIT, ReceivedMessage, SmtpSink

__all__ = [
    "DATA_SIZE_LIMIT",
    "InboxWebServer",
    "ReceivedMessage",
    "SmtpSink",
]
