"""Classifying SMTP replies and connection failures; pure."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

__all__ = ["Reply", "Verdict", "classify", "parse_reply"]

_ENHANCED = re.compile(r"^([245]\.\d{1,3}\.\d{1,3})\b")


class Verdict(enum.Enum):
    DELIVERED = "delivered"
    DEFERRED = "deferred"
    BOUNCED = "bounced"


@dataclass(frozen=True, slots=True)
class Reply:
    code: int  # 0 when there was no reply at all (connection refused, dropped, timed out)
    enhanced: str
    text: str
    # No reply to the final ".": the relay may have taken the message, so a retry may duplicate it.
    after_final_dot: bool = False


def parse_reply(code: int, message: str) -> Reply:
    text = " ".join(message.split())[:512]
    match = _ENHANCED.match(text)
    return Reply(code=code, enhanced=match.group(1) if match else "", text=text)


def classify(reply: Reply) -> Verdict:
    """2xx delivered; 5xx bounced; 4xx and no reply at all deferred.

    An enhanced code wins over the basic one where they disagree (a "550 4.7.1" is a temporary
    policy block in practice), because receivers set the enhanced code more carefully.
    """
    if 200 <= reply.code < 300:
        return Verdict.DELIVERED
    if reply.enhanced.startswith("4."):
        return Verdict.DEFERRED
    if 500 <= reply.code < 600:
        return Verdict.BOUNCED
    return Verdict.DEFERRED
