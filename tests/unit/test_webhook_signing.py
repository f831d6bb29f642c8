"""Standard Webhooks bodies and signatures, checked with the reference `standardwebhooks` library."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from postwire.v1 import event_pb2
from standardwebhooks import Webhook, WebhookVerificationError

from libs.webhook_signing import event_type_name, sign, webhook_body

OLD = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
NEW = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"


def _event() -> event_pb2.Event:
    created = Timestamp()
    created.FromDatetime(datetime(2026, 12, 2, 1, 2, 3, 456000, tzinfo=UTC))
    return event_pb2.Event(
        id="evt_1",
        type=event_pb2.EVENT_TYPE_DELIVERED,
        message_id="msg_1",
        recipient="ana@example.com",
        create_time=created,
        stream="outbound",
        tags=["welcome"],
        metadata={"order": "42", "note": "café"},
        attempt=1,
    )


def _headers(msg_id: str, timestamp: int, signature: str) -> dict[str, str]:
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp), "webhook-signature": signature}


def test_signature_verifies_with_the_reference_library() -> None:
    body = webhook_body(_event())
    now = int(datetime.now(UTC).timestamp())
    signature = sign("evt_1", now, body, [NEW])
    assert signature.startswith("v1,") and " " not in signature
    assert Webhook(NEW).verify(body, _headers("evt_1", now, signature))["type"] == "email.delivered"


def test_two_secrets_during_rotation_each_verify_alone() -> None:
    body = webhook_body(_event())
    now = int(datetime.now(UTC).timestamp())
    signature = sign("evt_1", now, body, [OLD, NEW])
    assert len(signature.split(" ")) == 2
    for secret in (OLD, NEW):
        Webhook(secret).verify(body, _headers("evt_1", now, signature))
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + "A" * 32).verify(body, _headers("evt_1", now, signature))


@pytest.mark.parametrize("change", ["body", "id", "timestamp"])
def test_any_change_to_the_signed_content_fails_verification(change: str) -> None:
    body = webhook_body(_event())
    now = int(datetime.now(UTC).timestamp())
    signature = sign("evt_1", now, body, [NEW])
    headers = _headers("evt_1", now, signature)
    if change == "body":
        body = body.replace(b"ana@", b"anb@")
    elif change == "id":
        headers["webhook-id"] = "evt_2"
    else:
        headers["webhook-timestamp"] = str(now - 1)
    with pytest.raises(WebhookVerificationError):
        Webhook(NEW).verify(body, headers)


def test_timestamps_outside_five_minutes_fail_verification() -> None:
    body = webhook_body(_event())
    now = int(datetime.now(UTC).timestamp())
    for stamp in (now - 5 * 60 - 1, now + 5 * 60 + 1):
        with pytest.raises(WebhookVerificationError):
            Webhook(NEW).verify(body, _headers("evt_1", stamp, sign("evt_1", stamp, body, [NEW])))


def test_sign_refuses_what_cannot_verify() -> None:
    with pytest.raises(ValueError, match="secret"):
        sign("evt_1", 1, b"{}", [])
    with pytest.raises(ValueError, match=r"'\.'"):
        sign("evt.1", 1, b"{}", [NEW])


def test_body_is_compact_json_with_type_timestamp_and_proto3_data() -> None:
    body = webhook_body(_event())
    assert b": " not in body and b", " not in body
    payload = json.loads(body)
    assert payload["type"] == "email.delivered"
    assert payload["timestamp"] == "2026-12-02T01:02:03.456Z"
    assert payload["data"]["messageId"] == "msg_1"
    assert payload["data"]["createTime"] == "2026-12-02T01:02:03.456Z"
    assert payload["data"]["metadata"] == {"order": "42", "note": "café"}
    assert payload["data"]["type"] == "EVENT_TYPE_DELIVERED"


@pytest.mark.parametrize(
    ("event_type", "name"),
    [
        (event_pb2.EVENT_TYPE_ACCEPTED, "email.accepted"),
        (event_pb2.EVENT_TYPE_DELIVERED, "email.delivered"),
        (event_pb2.EVENT_TYPE_DEFERRED, "email.deferred"),
        (event_pb2.EVENT_TYPE_BOUNCED, "email.bounced"),
        (event_pb2.EVENT_TYPE_SUPPRESSED, "email.suppressed"),
        (event_pb2.EVENT_TYPE_FAILED, "email.failed"),
        (event_pb2.EVENT_TYPE_EXPIRED, "email.expired"),
        (event_pb2.EVENT_TYPE_SCHEDULED, "email.scheduled"),
        (event_pb2.EVENT_TYPE_COMPLAINED, "email.complained"),
        (event_pb2.EVENT_TYPE_OPENED, "email.opened"),
        (event_pb2.EVENT_TYPE_CLICKED, "email.clicked"),
        (event_pb2.EVENT_TYPE_UNSUBSCRIBED, "email.unsubscribed"),
        (event_pb2.EVENT_TYPE_WEBHOOK_DISABLED, "webhook.disabled"),
    ],
)
def test_event_type_names(event_type: int, name: str) -> None:
    assert event_type_name(event_type) == name


@pytest.mark.parametrize("event_type", [event_pb2.EVENT_TYPE_UNSPECIFIED, 999])
def test_event_type_without_a_name_is_an_error(event_type: int) -> None:
    with pytest.raises(ValueError):
        event_type_name(event_type)
