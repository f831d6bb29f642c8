"""The router's decisions, in the order it takes them; pure.

For one route task: a message no longer waiting is done; a scheduled one waits for its send time;
one whose give-up time has passed expires without being rendered (a template render is the
costly step, and a message that old must not go out); anything else is rendered and built.
After a failure: an outage never counts and gives up only at the give-up time; any other
failure counts, and gives up once the stage's attempts are exhausted.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from postwire.v1 import event_pb2

from libs.mail.states import MessageState, RecipientState
from libs.stage_retry import StageRetry

__all__ = [
    "Ending",
    "GiveUp",
    "Retry",
    "Step",
    "after_failure",
    "after_outage",
    "ending",
    "first_step",
    "give_up_start",
    "unrouted",
]

# The recipients the router still owns; any other state was settled at acceptance (suppressed).
_UNROUTED = frozenset({RecipientState.ACCEPTED, RecipientState.SCHEDULED})


class Step(enum.Enum):
    DONE = enum.auto()  # routed or given up already (a redelivered task): nothing to do
    WAIT = enum.auto()  # scheduled for later; the sweeper brings it back when due
    EXPIRE = enum.auto()  # its give-up time passed before it was routed
    ROUTE = enum.auto()  # render (if templated), build, queue for delivery


def give_up_start(*, create_time: datetime, send_time: datetime | None) -> datetime:
    """A scheduled message's give-up clock starts at its send time."""
    return create_time if send_time is None or send_time < create_time else send_time


def first_step(
    state: MessageState | None,
    /,
    *,
    create_time: datetime,
    send_time: datetime | None,
    now: datetime,
    retry: StageRetry,
) -> Step:
    if state is not MessageState.ACCEPTED:
        return Step.DONE
    if send_time is not None and send_time > now:
        return Step.WAIT
    if now >= retry.give_up_time(give_up_start(create_time=create_time, send_time=send_time)):
        return Step.EXPIRE
    return Step.ROUTE


@dataclass(frozen=True, slots=True)
class Retry:
    delay: float  # seconds before JetStream redelivers the task


@dataclass(frozen=True, slots=True)
class GiveUp:
    expired: bool  # the give-up time passed (an outage), rather than attempts exhausted


def after_outage(start: datetime, delay: float, /, *, now: datetime, retry: StageRetry) -> Retry | GiveUp:
    """A dependency was down: retry without counting, until the give-up time."""
    return GiveUp(expired=True) if now >= retry.give_up_time(start) else Retry(delay)


def after_failure(attempts: int, /, *, retry: StageRetry) -> Retry | GiveUp:
    """The stage failed on this message (`attempts` counted so far): back off, or give up."""
    return GiveUp(expired=False) if retry.exhausted(attempts) else Retry(retry.delay(attempts))


@dataclass(frozen=True, slots=True)
class Ending:
    message: MessageState
    recipient: RecipientState
    event: event_pb2.EventType.ValueType


def ending(*, expired: bool) -> Ending:
    """The states and event a message given up by the router ends with."""
    if expired:
        return Ending(MessageState.EXPIRED, RecipientState.EXPIRED, event_pb2.EVENT_TYPE_EXPIRED)
    return Ending(MessageState.FAILED, RecipientState.FAILED, event_pb2.EVENT_TYPE_FAILED)


def unrouted(recipients: Sequence[tuple[int, str, RecipientState]], /) -> list[tuple[int, str]]:
    """(position, address) of the recipients a give-up ends: those the router still owns."""
    return [(position, address) for position, address, state in recipients if state in _UNROUTED]
