"""Classifying SMTP replies and connection failures; pure."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from postwire.v1 import message_pb2

from libs.mail.bounce_classes import first_rule
from libs.mail.states import RecipientState

__all__ = ["Classification", "Reply", "Verdict", "classify", "parse_reply"]

_ENHANCED = re.compile(r"^([245]\.\d{1,3}\.\d{1,3})\b")


class Verdict(enum.Enum):
    """An attempt's result, named by the recipient state it leads to (before the give-up time is
    considered: a deferral past it expires)."""

    DELIVERED = RecipientState.DELIVERED
    DEFERRED = RecipientState.DEFERRED
    BOUNCED = RecipientState.BOUNCED


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


@dataclass(frozen=True, slots=True)
class Classification:
    verdict: Verdict
    category: message_pb2.BounceCategory.ValueType  # UNSPECIFIED for a delivery


def classify(reply: Reply) -> Classification:
    """2xx delivered; 5xx bounced; 4xx and no reply at all deferred; the category from the
    bounce table (bounce_classes), which also names the 5xx replies that are retried anyway.

    An enhanced code wins over the basic one where they disagree (a "550 4.7.1" is a temporary
    policy block in practice), because receivers set the enhanced code more carefully.
    """
    if 200 <= reply.code < 300:
        return Classification(Verdict.DELIVERED, message_pb2.BOUNCE_CATEGORY_UNSPECIFIED)
    rule = first_rule(reply.code, reply.enhanced, reply.text)
    permanent = 500 <= reply.code < 600 and not reply.enhanced.startswith("4.")
    if permanent and not rule.always_defer:
        return Classification(Verdict.BOUNCED, rule.category)
    # HARD suppresses the address; a failure that is retried must not claim it (a "450 5.1.1").
    category = (
        message_pb2.BOUNCE_CATEGORY_SOFT
        if rule.category == message_pb2.BOUNCE_CATEGORY_HARD
        else rule.category
    )
    return Classification(Verdict.DEFERRED, category)
