"""One message through every service: the bytes at the SMTP server, the events, GetMessage."""

from __future__ import annotations

import email
import email.policy

from postwire.v1 import event_pb2, mail_service_pb2, mail_service_pb2_grpc, message_pb2

from libs.return_path import ReturnPathTokens
from libs.token_keys import KeyRing
from tests.conftest import TOKEN_KEYS
from tests.integration.helpers import mail, unique, wait_for_events, wait_for_mail

PDF = b"%PDF-1.4\n" + bytes(range(256)) * 4
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


async def test_message_arrives_with_envelope_headers_parts_and_attachments(edge, tenant, smtp_sink) -> None:
    to, cc, bcc = unique("to"), unique("cc"), unique("bcc")
    request = mail(
        from_={"address": "billing@example.com", "name": "Billing Ünit"},
        to=[{"address": to, "name": "To Person"}],
        cc=[{"address": cc}],
        bcc=[{"address": bcc}],
        reply_to=[{"address": "support@example.com"}],
        subject="Your receipt №42",
        text_body="Thanks!\n.\nA line that is only a dot above.",
        html_body='<p>Thanks!</p><img src="cid:logo">',
        headers={"X-Campaign": "spring"},
        attachments=[
            {"filename": "receipt.pdf", "content_type": "application/pdf", "content": PDF},
            {"filename": "logo.png", "content_type": "image/png", "content": PNG, "content_id": "logo"},
        ],
        tags=["receipt"],
        metadata={"order": "42"},
    )
    stub = mail_service_pb2_grpc.MailServiceStub(edge)
    answer = await stub.SendEmail(request, metadata=tenant.metadata)
    assert [r.address for r in answer.recipients] == [to, cc, bcc]
    assert all(r.state == message_pb2.RECIPIENT_STATE_ACCEPTED for r in answer.recipients)

    # One transaction per recipient, each with a return path whose token names its recipient
    # (example.com is not a verified domain, so the shared return-path host is used).
    tokens = ReturnPathTokens(KeyRing.parse(TOKEN_KEYS))
    for position, address in enumerate([to, cc, bcc]):
        (copy,) = await wait_for_mail(smtp_sink, address)
        assert copy.rcpt_tos == (address,)
        local, _, host = copy.mail_from.partition("@")
        assert host == "bounces.postwire.localhost" and local.startswith("bounces+")
        assert tokens.open(local.removeprefix("bounces+")) == (answer.message_id, position)
        assert b"bcc+" not in copy.data.lower(), "a Bcc recipient leaked into the message"
    (received,) = await wait_for_mail(smtp_sink, to)
    parsed = email.message_from_bytes(received.data, policy=email.policy.default)
    assert parsed["Subject"] == "Your receipt №42"
    assert parsed["From"].addresses[0].display_name == "Billing Ünit"
    assert parsed["To"].addresses[0].addr_spec == to
    assert parsed["Cc"].addresses[0].addr_spec == cc
    assert parsed["Reply-To"].addresses[0].addr_spec == "support@example.com"
    assert parsed["X-Campaign"] == "spring"
    assert parsed["X-Postwire-Message-Id"] == answer.message_id
    assert parsed["Message-ID"].startswith(f"<{answer.message_id}@")
    assert parsed["Date"] is not None
    text = parsed.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert text.rstrip("\n") == "Thanks!\n.\nA line that is only a dot above."
    assert "cid:logo" in parsed.get_body(("html",)).get_content()
    attachments = {part.get_filename(): part for part in parsed.iter_attachments()}
    assert attachments["receipt.pdf"].get_content_type() == "application/pdf"
    assert attachments["receipt.pdf"].get_content() == PDF
    inline = [p for p in parsed.walk() if p.get("Content-ID") == "<logo>"]
    assert len(inline) == 1 and inline[0].get_content() == PNG

    events = await wait_for_events(
        edge,
        tenant.metadata,
        answer.message_id,
        [event_pb2.EVENT_TYPE_ACCEPTED] * 3 + [event_pb2.EVENT_TYPE_DELIVERED] * 3,
    )
    delivered = [e for e in events if e.type == event_pb2.EVENT_TYPE_DELIVERED]
    assert sorted(e.recipient for e in delivered) == sorted([to, cc, bcc])
    assert all(e.smtp_reply.code == 250 and e.attempt == 1 for e in delivered)
    assert all(list(e.tags) == ["receipt"] and dict(e.metadata) == {"order": "42"} for e in events)

    got = await stub.GetMessage(
        mail_service_pb2.GetMessageRequest(message_id=answer.message_id), metadata=tenant.metadata
    )
    assert got.message.id == answer.message_id
    assert got.message.subject == "Your receipt №42"
    assert getattr(got.message, "from").address == "billing@example.com"
    assert [r.state for r in got.message.recipients] == [message_pb2.RECIPIENT_STATE_DELIVERED] * 3
    assert all(r.last_reply.code == 250 and r.attempts == 1 for r in got.message.recipients)
    assert got.message.rfc822_message_id == parsed["Message-ID"]


async def test_idn_recipient_is_sent_as_a_labels(edge, tenant, smtp_sink) -> None:
    local = unique("idn", "bücher.example").split("@")[0]
    stub = mail_service_pb2_grpc.MailServiceStub(edge)
    await stub.SendEmail(mail(to=[{"address": f"{local}@bücher.example"}]), metadata=tenant.metadata)
    (received,) = await wait_for_mail(smtp_sink, f"{local}@xn--bcher-kva.example")
    assert received.rcpt_tos == (f"{local}@xn--bcher-kva.example",)


async def test_smtp_smuggling_payload_stays_content(edge, tenant, smtp_sink) -> None:
    rcpt = unique()
    body = "hi\r\n.\r\nMAIL FROM:<ceo@bank.example>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\nSubject: pwn\r\n\r\nx\r\n.\r\n"
    stub = mail_service_pb2_grpc.MailServiceStub(edge)
    await stub.SendEmail(mail(to=[{"address": rcpt}], text_body=body), metadata=tenant.metadata)
    (received,) = await wait_for_mail(smtp_sink, rcpt)
    assert not [m for m in smtp_sink.messages() if "victim@example.com" in m.rcpt_tos]
    parsed = email.message_from_bytes(received.data, policy=email.policy.default)
    assert parsed.get_content().replace("\r\n", "\n").rstrip("\n") == body.replace("\r\n", "\n").rstrip("\n")
