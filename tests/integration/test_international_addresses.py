"""Internationalised addresses (RFC 6531/6532) through the public API to the bytes at the sink."""

from __future__ import annotations

import email
import email.policy
import uuid

import grpc
import pytest
from postwire.v1 import event_pb2, mail_service_pb2_grpc, message_pb2

from tests.integration.helpers import bad_request_fields, mail, wait_for_events, wait_for_mail


async def test_a_non_ascii_local_part_arrives_over_smtputf8_with_a_raw_utf8_to_header(
    edge, tenant, smtp_sink
) -> None:
    tag = uuid.uuid4().hex[:10]
    to, cc = f"用户+{tag}@例子.测试", f"josé+{tag}@example.com"
    to_wire = f"用户+{tag}@xn--fsqu00a.xn--0zwm56d"
    stub = mail_service_pb2_grpc.MailServiceStub(edge)
    answer = await stub.SendEmail(
        mail(to=[{"address": to, "name": "Zoë Müller"}], cc=[{"address": cc}], subject="Grüße"),
        metadata=tenant.metadata,
    )
    assert [r.address for r in answer.recipients] == [to, cc]
    assert all(r.state == message_pb2.RECIPIENT_STATE_ACCEPTED for r in answer.recipients)

    # One transaction per recipient; both addresses need SMTPUTF8 on the wire.
    (received,) = await wait_for_mail(smtp_sink, to_wire)
    (copy,) = await wait_for_mail(smtp_sink, cc)
    for transaction, address in ((received, to_wire), (copy, cc)):
        assert "SMTPUTF8" in transaction.mail_options
        assert transaction.rcpt_tos == (address,)
    header_section = received.data.split(b"\r\n\r\n", 1)[0]
    assert f"<{to_wire}>".encode() in header_section, "the To address is raw UTF-8"
    assert cc.encode() in header_section, "the Cc address is raw UTF-8"
    assert "Zoë".encode() not in header_section, "the display name stays an encoded-word"
    assert received.data.split(b"\r\n\r\n", 1)[1].isascii()

    parsed = email.message_from_string(received.data.decode("utf-8"), policy=email.policy.default)
    assert [(a.display_name, a.addr_spec) for a in parsed["To"].addresses] == [("Zoë Müller", to_wire)]
    assert [a.addr_spec for a in parsed["Cc"].addresses] == [cc]
    assert parsed["Subject"] == "Grüße"

    events = await wait_for_events(
        edge,
        tenant.metadata,
        answer.message_id,
        [event_pb2.EVENT_TYPE_ACCEPTED] * 2 + [event_pb2.EVENT_TYPE_DELIVERED] * 2,
    )
    delivered = [e for e in events if e.type == event_pb2.EVENT_TYPE_DELIVERED]
    assert sorted(e.recipient for e in delivered) == sorted([to, cc])


async def test_an_ascii_only_message_is_sent_without_smtputf8(edge, tenant, smtp_sink) -> None:
    to = f"ascii+{uuid.uuid4().hex[:10]}@example.com"
    stub = mail_service_pb2_grpc.MailServiceStub(edge)
    await stub.SendEmail(mail(to=[{"address": to, "name": "Zoë"}]), metadata=tenant.metadata)
    (received,) = await wait_for_mail(smtp_sink, to)
    assert "SMTPUTF8" not in received.mail_options
    assert received.data.isascii()


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"from_": {"address": "josé@example.com"}}, "from.address"),
        ({"to": [{"address": '"用 户"@example.com'}]}, "to[0].address"),
        ({"to": [{"address": "用\u200b户@example.com"}]}, "to[0].address"),
        ({"cc": [{"address": "用户\r\nBcc: x@example.com@example.com"}]}, "cc[0].address"),
        ({"reply_to": [{"address": "用" * 22 + "@example.com"}]}, "reply_to[0].address"),
    ],
)
async def test_bad_internationalised_addresses_are_invalid_argument_naming_the_field(
    edge, tenant, fields, field
) -> None:
    stub = mail_service_pb2_grpc.MailServiceStub(edge)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.SendEmail(mail(**fields), metadata=tenant.metadata)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request_fields(info.value) == [field]
