"""The inbound use case's decisions: what one accepted report means; pure.

A report is first read as an ARF feedback report, then as a bounce. It is matched to one
recipient of one message by a return-path token (libs.return_path): for a bounce the envelope's
(the report came to that recipient's own return path), else the returned original's headers; for
a complaint the envelope's, then the original's Original-Mail-From / Return-Path, then its signed
X-Postwire-Feedback-Id header. Anything else is counted and dropped.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from postwire.v1 import message_pb2

from libs.mail.arf import parse_arf
from libs.mail.dsn import parse_bounce, reply_of
from libs.mail.smtp_outcome import Reply, Verdict, classify
from libs.mail.states import RecipientState
from libs.return_path import token_of
from services.inbound.recipients import TokenOpener

__all__ = [
    "AsyncBounce",
    "Complaint",
    "Decision",
    "Dropped",
    "Target",
    "bounce_moves",
    "decide",
]

# Recipient states an asynchronous bounce moves to bounced. Never a terminal one: a recipient
# that already bounced, expired or failed keeps what it has (a second bounce is a duplicate), and
# a suppressed one was never sent.
MOVABLE_STATES = frozenset({RecipientState.DELIVERED, RecipientState.DEFERRED, RecipientState.QUEUED})


@dataclass(frozen=True, slots=True)
class Target:
    message_id: str
    index: int


@dataclass(frozen=True, slots=True)
class AsyncBounce:
    target: Target
    reply: Reply
    category: message_pb2.BounceCategory.ValueType
    reason: str
    remote_host: str


@dataclass(frozen=True, slots=True)
class Complaint:
    target: Target
    feedback_type: str
    reason: str


@dataclass(frozen=True, slots=True)
class Dropped:
    counter: str  # malformed | unmatched | ignored
    why: str


Decision = AsyncBounce | Complaint | Dropped


def bounce_moves(state: RecipientState) -> bool:
    return state in MOVABLE_STATES


def decide(raw: bytes, envelope_tokens: Sequence[str], tokens: TokenOpener) -> Decision:
    arf = parse_arf(raw)
    if arf is not None:
        if not arf.is_complaint:
            return Dropped("ignored", f"feedback type {arf.feedback_type or 'missing'!r} is not a complaint")
        original = arf.original
        target = _first_target(
            [
                *envelope_tokens,
                _token(arf.original_mail_from),
                _token(original.return_path if original else ""),
                original.feedback_id if original else "",
            ],
            tokens,
        )
        if target is None:
            return Dropped("unmatched", "feedback report without a Postwire token")
        agent = f" via {arf.user_agent}" if arf.user_agent else ""
        return Complaint(target, arf.feedback_type, f"complaint ({arf.feedback_type}){agent}"[:512])
    report = parse_bounce(raw)
    if report is None:
        return Dropped("malformed", "neither a delivery status notification nor a feedback report")
    if not report.failures:
        return Dropped("ignored", f"{report.format} report without a failed recipient (delayed or delivered)")
    original = report.original
    target = _first_target(
        [
            *envelope_tokens,
            _token(original.return_path if original else ""),
            original.feedback_id if original else "",
        ],
        tokens,
    )
    if target is None:
        return Dropped("unmatched", "bounce without a Postwire token")
    # One token names one recipient; a report listing several failures (a forwarder expanding
    # the address) is about that recipient all the same: the first failure speaks for it.
    failure = report.failures[0]
    reply = reply_of(failure)
    verdict = classify(reply)
    if verdict.verdict is Verdict.DELIVERED:
        return Dropped("malformed", "failed recipient with a 2xx diagnostic")
    remote = f" from {failure.remote_mta}" if failure.remote_mta else ""
    return AsyncBounce(
        target,
        reply,
        verdict.category,
        f"asynchronous bounce ({report.format}){remote}: {reply.code} {reply.text}"[:512],
        failure.remote_mta,
    )


def _token(address: str) -> str:
    try:
        return token_of(address)
    except Exception:
        return ""


def _first_target(candidates: Iterable[str], tokens: TokenOpener) -> Target | None:
    for token in candidates:
        if not token:
            continue
        try:
            message_id, index = tokens.open(token.strip().lower())
        except Exception:
            continue
        return Target(message_id, index)
    return None
