"""Which events suppress, and the relay that sends owed suppressions to policy: batches per tenant,
retired only on success, kept with a growing (bounded) back-off on any failure."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import pytest
from postwire.internal.v1 import bus_pb2
from postwire.v1 import event_pb2, message_pb2, suppression_service_pb2

from libs.errors import InvalidArgument, Unavailable
from services.events.relay_suppressions import SuppressionRelay
from services.events.suppression_rule import (
    MAX_RETRY_SECONDS,
    PendingSuppression,
    retry_delay,
    suppression_for,
)

TENANT_A, TENANT_B = "7d3c8a52-4f0e-4b8e-9a57-2f1c0b6f5e11", "1b2c3d4e-5f60-4718-8a9b-0c1d2e3f4a5b"
MESSAGE = "0f5e1a40-3f0b-4c1e-8d2a-9b7c6e5d4c3b"


def bounce(category: int, *, type_: int = event_pb2.EVENT_TYPE_BOUNCED) -> bus_pb2.EventEnvelope:
    return bus_pb2.EventEnvelope(
        tenant_id=TENANT_A,
        event=event_pb2.Event(
            id=f"{MESSAGE}:0:1:bounced",
            type=type_,  # type: ignore[arg-type]
            message_id=MESSAGE,
            recipient="Ada@example.org",
            smtp_reply=message_pb2.SmtpReply(code=550, enhanced_code="5.1.1", text="5.1.1 User unknown"),
            bounce_category=category,  # type: ignore[arg-type]
        ),
    )


def test_a_hard_bounce_suppresses_its_recipient() -> None:
    assert suppression_for(bounce(message_pb2.BOUNCE_CATEGORY_HARD)) == PendingSuppression(
        event_id=f"{MESSAGE}:0:1:bounced",
        tenant_id=TENANT_A,
        address="Ada@example.org",
        reason=suppression_service_pb2.SUPPRESSION_REASON_HARD_BOUNCE,
        source_message_id=MESSAGE,
        detail="hard bounce: 550 5.1.1 User unknown",
    )


@pytest.mark.parametrize(
    "category",
    [
        message_pb2.BOUNCE_CATEGORY_SOFT,
        message_pb2.BOUNCE_CATEGORY_BLOCK,
        message_pb2.BOUNCE_CATEGORY_THROTTLE,
        message_pb2.BOUNCE_CATEGORY_CONFIG,
        message_pb2.BOUNCE_CATEGORY_UNSPECIFIED,
    ],
)
def test_other_bounces_never_suppress(category: int) -> None:
    assert suppression_for(bounce(category)) is None


@pytest.mark.parametrize("type_", [event_pb2.EVENT_TYPE_DEFERRED, event_pb2.EVENT_TYPE_EXPIRED])
def test_only_a_bounce_suppresses(type_: int) -> None:
    assert suppression_for(bounce(message_pb2.BOUNCE_CATEGORY_HARD, type_=type_)) is None


def test_a_complaint_suppresses_its_recipient_as_a_complaint() -> None:
    envelope = bus_pb2.EventEnvelope(
        tenant_id=TENANT_A,
        event=event_pb2.Event(
            id=f"{MESSAGE}:0:complained",
            type=event_pb2.EVENT_TYPE_COMPLAINED,
            message_id=MESSAGE,
            recipient="Ada@example.org",
            reason="complaint (abuse) via ExampleFBL/1.0",
            asynchronous=True,
        ),
    )
    assert suppression_for(envelope) == PendingSuppression(
        event_id=f"{MESSAGE}:0:complained",
        tenant_id=TENANT_A,
        address="Ada@example.org",
        reason=suppression_service_pb2.SUPPRESSION_REASON_COMPLAINT,
        source_message_id=MESSAGE,
        detail="complaint (abuse) via ExampleFBL/1.0",
    )


def test_a_bounce_without_a_reply_names_its_reason() -> None:
    envelope = bounce(message_pb2.BOUNCE_CATEGORY_HARD)
    envelope.event.ClearField("smtp_reply")
    envelope.event.reason = "null MX: example.org accepts no mail"
    item = suppression_for(envelope)
    assert item is not None and item.detail == "hard bounce: null MX: example.org accepts no mail"


def test_retry_delay_doubles_up_to_a_bound_and_never_stops() -> None:
    assert [retry_delay(n) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 8.0]
    assert retry_delay(50) == retry_delay(10_000) == MAX_RETRY_SECONDS


def item(n: int, tenant: str = TENANT_A, attempts: int = 0) -> PendingSuppression:
    return PendingSuppression(f"e{n}", tenant, f"user{n}@example.org", 1, MESSAGE, "hard bounce", attempts)


class Outbox:
    def __init__(self, rows: list[PendingSuppression]) -> None:
        self.rows = {r.event_id: r for r in rows}
        self.claimed: set[str] = set()
        self.retries: list[tuple[str, float, str]] = []

    async def claim_due(self, *, limit: int, lease: timedelta) -> list[PendingSuppression]:
        due = [r for k, r in self.rows.items() if k not in self.claimed][:limit]
        self.claimed |= {r.event_id for r in due}
        return due

    async def done(self, event_ids: Sequence[str]) -> None:
        for event_id in event_ids:
            del self.rows[event_id]

    async def retry_later(self, delays: Sequence[tuple[str, float]], *, error: str) -> None:
        self.retries += [(event_id, delay, error) for event_id, delay in delays]


class Policy:
    def __init__(self, fail: Exception | None = None, bad: frozenset[str] = frozenset()) -> None:
        self.calls: list[tuple[str, list[str]]] = []
        self.fail = fail
        self.bad = bad

    async def record(self, tenant_id: str, items: Sequence[PendingSuppression]) -> None:
        self.calls.append((tenant_id, [i.address for i in items]))
        if self.fail is not None:
            raise self.fail
        if any(i.address in self.bad for i in items):
            raise InvalidArgument([("suppressions[0].address", "an email address is required")])


async def test_rows_go_in_one_call_per_tenant_and_leave_the_outbox() -> None:
    outbox = Outbox([item(1), item(2, TENANT_B), item(3)])
    policy = Policy()
    assert await SuppressionRelay(outbox, policy).drain() == 3
    assert sorted(policy.calls) == sorted(
        [(TENANT_A, ["user1@example.org", "user3@example.org"]), (TENANT_B, ["user2@example.org"])]
    )
    assert outbox.rows == {}


async def test_policy_down_keeps_every_row_with_a_growing_delay() -> None:
    outbox = Outbox([item(1, attempts=0), item(2, attempts=3)])
    policy = Policy(fail=Unavailable("policy unavailable"))
    assert await SuppressionRelay(outbox, policy).drain() == 0
    assert set(outbox.rows) == {"e1", "e2"}
    assert sorted(outbox.retries) == [("e1", 1.0, "Unavailable"), ("e2", 8.0, "Unavailable")]
    # An outage is not a reason to try each row on its own.
    assert len(policy.calls) == 1


async def test_one_bad_row_does_not_hold_back_its_tenant() -> None:
    outbox = Outbox([item(1), item(2), item(3)])
    policy = Policy(bad=frozenset({"user2@example.org"}))
    assert await SuppressionRelay(outbox, policy).drain() == 2
    assert set(outbox.rows) == {"e2"}
    assert outbox.retries == [("e2", 1.0, "InvalidArgument")]
