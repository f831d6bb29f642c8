"""Standard Webhooks payloads and signatures (DELIVERY.md §9): the body is
`{"type", "timestamp", "data"}` as compact JSON, and `webhook-signature` holds one `v1,<base64
HMAC-SHA256>` per secret over `{webhook-id}.{webhook-timestamp}.{body}`, space-separated, so a
receiver rotating its secret verifies with either. Pure: no I/O."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Sequence

from google.protobuf import json_format
from postwire.v1 import event_pb2

from libs.webhook_secrets import raw_secret

__all__ = ["event_type_name", "sign", "webhook_body"]

_PREFIX = "EVENT_TYPE_"
_NOT_EMAIL = {event_pb2.EVENT_TYPE_WEBHOOK_DISABLED: "webhook.disabled"}


def sign(msg_id: str, timestamp: int, body: bytes, secrets: Sequence[str]) -> str:
    """The `webhook-signature` header value for this attempt, one entry per `whsec_…` secret."""
    if not secrets:
        raise ValueError("at least one secret is needed to sign")
    if "." in msg_id:
        # The signed content is dot-separated; the spec forbids dots in the id.
        raise ValueError("a webhook id must not contain '.'")
    content = f"{msg_id}.{timestamp}.".encode() + body
    return " ".join(
        "v1," + base64.b64encode(hmac.digest(raw_secret(secret), content, hashlib.sha256)).decode()
        for secret in secrets
    )


def event_type_name(event_type: event_pb2.EventType.ValueType | int) -> str:
    """`email.delivered`, `email.bounced`, … and `webhook.disabled`; ValueError for UNSPECIFIED
    or a number this build does not know."""
    value = event_pb2.EventType.ValueType(event_type)
    if value in _NOT_EMAIL:
        return _NOT_EMAIL[value]
    if value == event_pb2.EVENT_TYPE_UNSPECIFIED:
        raise ValueError("EVENT_TYPE_UNSPECIFIED has no webhook type")
    name = event_pb2.EventType.Name(value)  # ValueError for an unknown number
    return "email." + name.removeprefix(_PREFIX).lower()


def webhook_body(event: event_pb2.Event) -> bytes:
    """The exact bytes to sign and send: proto3 JSON names (messageId, createTime), UTF-8."""
    data = json_format.MessageToDict(event)
    payload = {
        "type": event_type_name(event.type),
        # The same text as data.createTime (formatting it twice was a measurable share of each
        # attempt); an event without one still gets the epoch, as before.
        "timestamp": data.get("createTime") or event.create_time.ToJsonString(),
        "data": data,
    }
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
