"""Stored messages → public protos: states by their proto value, a next attempt only when deferred."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from postwire.v1 import message_pb2

from libs.mail.states import RecipientState
from services.submission.message_protos import recipient_statuses, send_response
from services.submission.messages import MessageRow, RecipientRow

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def recipient(address: str, state: RecipientState) -> RecipientRow:
    return RecipientRow(
        address=address,
        kind=message_pb2.RECIPIENT_KIND_TO,
        state=state,
        attempts=2,
        last_code=451,
        last_enhanced="4.7.1",
        last_text="greylisted",
        # The column keeps its last value after delivery; the caller must not see a stale one.
        next_attempt_time=NOW + timedelta(minutes=5),
        update_time=NOW,
    )


def test_only_a_deferred_recipient_carries_its_next_attempt_time() -> None:
    row = MessageRow(
        id="m-1",
        request=b"",
        request_hash=b"",
        stream="transactional",
        create_time=NOW,
        send_time=None,
        rfc822_message_id=None,
        recipients=[
            recipient("a@example.org", RecipientState.DEFERRED),
            recipient("b@example.org", RecipientState.DELIVERED),
        ],
    )

    deferred, delivered = recipient_statuses(row)

    assert deferred.state == message_pb2.RECIPIENT_STATE_DEFERRED
    assert deferred.HasField("next_attempt_time")
    assert (deferred.last_reply.code, deferred.last_reply.enhanced_code) == (451, "4.7.1")
    assert delivered.state == message_pb2.RECIPIENT_STATE_DELIVERED
    assert not delivered.HasField("next_attempt_time")


def test_a_new_send_answers_each_recipient_in_request_order() -> None:
    response = send_response(
        "m-1",
        [
            ("a@example.org", message_pb2.RECIPIENT_KIND_TO, RecipientState.ACCEPTED),
            ("b@example.org", message_pb2.RECIPIENT_KIND_BCC, RecipientState.SUPPRESSED),
        ],
    )

    assert response.message_id == "m-1"
    assert [(r.address, r.kind, r.state) for r in response.recipients] == [
        ("a@example.org", message_pb2.RECIPIENT_KIND_TO, message_pb2.RECIPIENT_STATE_ACCEPTED),
        ("b@example.org", message_pb2.RECIPIENT_KIND_BCC, message_pb2.RECIPIENT_STATE_SUPPRESSED),
    ]
