"""new_event: the event an outcome reports, with its bounce category and the server it talked to."""

from __future__ import annotations

from postwire.v1 import event_pb2, message_pb2

from libs.event_outbox import EventContext, new_event

CTX = EventContext("7d3c8a52-4f0e-4b8e-9a57-2f1c0b6f5e11", "0f5e1a40-3f0b-4c1e-8d2a-9b7c6e5d4c3b", "outbound")


def test_bounce_category_and_remote_server_are_carried() -> None:
    remote = message_pb2.RemoteServer(
        host="mx.example.org",
        address="192.0.2.7",
        port=25,
        tls_version="TLSv1.3",
        tls_cipher="TLS_AES_256_GCM_SHA384",
    )
    envelope = new_event(
        CTX,
        event_pb2.EVENT_TYPE_BOUNCED,
        "ada@example.org",
        discriminator="0:1",
        smtp_reply=message_pb2.SmtpReply(code=550, enhanced_code="5.1.1", text="5.1.1 User unknown"),
        bounce_category=message_pb2.BOUNCE_CATEGORY_HARD,
        remote=remote,
    )
    assert envelope.event.bounce_category == message_pb2.BOUNCE_CATEGORY_HARD
    assert envelope.event.remote == remote
    assert envelope.event.id == f"{CTX.message_id}:0:1:bounced"


def test_defaults_leave_both_unset() -> None:
    envelope = new_event(CTX, event_pb2.EVENT_TYPE_DELIVERED, "ada@example.org", discriminator="0:1")
    assert envelope.event.bounce_category == message_pb2.BOUNCE_CATEGORY_UNSPECIFIED
    assert not envelope.event.HasField("remote")
