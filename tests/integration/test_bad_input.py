"""Bad requests get the right status with the field named, and nothing is stored or sent."""

from __future__ import annotations

import uuid

import asyncpg
import grpc
import pytest
from postwire.v1 import mail_service_pb2, mail_service_pb2_grpc

from tests.integration.helpers import bad_request_fields, mail, unique

CASES = [
    ("malformed to", {"to": [{"address": "user@"}]}, "to[0].address"),
    ("malformed from", {"from_": {"address": "@example.com"}}, "from.address"),
    ("CRLF in subject", {"subject": "Hi\r\nBcc: victim@example.com"}, "subject"),
    ("bare LF in subject", {"subject": "Hi\nthere"}, "subject"),
    (
        "CRLF in display name",
        {"from_": {"address": "a@example.com", "name": "Evil\r\nX-Injected: 1"}},
        "from.name",
    ),
    ("CRLF in recipient", {"to": [{"address": "a@example.com\r\nRCPT TO:<b@example.com>"}]}, "to[0].address"),
    ("CRLF in header value", {"headers": {"X-Foo": "a\r\nBcc: victim@example.com"}}, 'headers["X-Foo"]'),
    ("reserved header", {"headers": {"bCc": "victim@example.com"}}, 'headers["bCc"]'),
    ("bad header name", {"headers": {"X-A: B": "v"}}, 'headers["X-A: B"]'),
    ("no recipient", {"to": []}, "to"),
    ("no body", {"text_body": ""}, "text_body"),
    ("body and template", {"template": {"name": "welcome"}}, "template"),
    ("IP literal", {"to": [{"address": "me@[127.0.0.1]"}]}, "to[0].address"),
    ("quoted local part", {"to": [{"address": '"a b"@example.com'}]}, "to[0].address"),
    ("51 recipients", {"to": [{"address": f"r{i}@example.com"} for i in range(51)]}, "to"),
    (
        "attachment filename CRLF",
        {"attachments": [{"filename": "a.pdf\r\nContent-Type: text/html", "content": b"x"}]},
        "attachments[0].filename",
    ),
    (
        "executable attachment",
        {"attachments": [{"filename": "run.exe", "content": b"MZ"}]},
        "attachments[0].filename",
    ),
    ("bidi in stream", {"stream": "transactional\u202e"}, "stream"),
    ("long idempotency key", {"idempotency_key": "k" * 257}, "idempotency_key"),
]


async def _stored_rows(database_url: str, tenant_id: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return int(
            await conn.fetchval(
                "SELECT (SELECT count(*) FROM messages WHERE tenant_id = $1::uuid)"
                " + (SELECT count(*) FROM event_outbox WHERE tenant_id = $1::uuid)"
                " + (SELECT count(*) FROM events WHERE tenant_id = $1::uuid)",
                tenant_id,
            )
        )
    finally:
        await conn.close()


@pytest.mark.parametrize(("case", "fields", "field"), CASES, ids=[c[0] for c in CASES])
async def test_invalid_request_names_the_field_and_stores_nothing(
    suite, edge, tenant, smtp_sink, case, fields, field
) -> None:
    rcpt = unique()
    fields = {"to": [{"address": rcpt}], **fields}
    stub = mail_service_pb2_grpc.MailServiceStub(edge)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.SendEmail(mail(**fields), metadata=tenant.metadata)
    error = caught.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in bad_request_fields(error)
    assert "Traceback" not in (error.details() or "")
    assert await _stored_rows(suite.database_url, tenant.id) == 0
    assert not [m for m in smtp_sink.messages() if rcpt in m.rcpt_tos]


@pytest.mark.parametrize(
    "metadata",
    [
        (),
        (("authorization", "Bearer "),),
        (("authorization", "Basic dXNlcjpwYXNz"),),
        (("authorization", "Bearer pw_00000000_not-a-real-key"),),
    ],
    ids=["missing", "empty bearer", "basic", "unknown key"],
)
async def test_missing_or_wrong_key_is_unauthenticated(suite, edge, tenant, metadata) -> None:
    stub = mail_service_pb2_grpc.MailServiceStub(edge)
    for call in (
        stub.SendEmail(mail(), metadata=metadata),
        stub.GetMessage(mail_service_pb2.GetMessageRequest(message_id=str(uuid.uuid4())), metadata=metadata),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_unknown_message_is_not_found(edge, tenant) -> None:
    stub = mail_service_pb2_grpc.MailServiceStub(edge)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetMessage(
            mail_service_pb2.GetMessageRequest(message_id=str(uuid.uuid4())), metadata=tenant.metadata
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_send_batch_checks_the_key_like_every_call(suite, edge) -> None:
    """An unknown key or a key without `send` gets nothing else, even for a batch that is well-formed."""
    from postwire.v1 import admin_service_pb2, admin_service_pb2_grpc

    from tests.conftest import ADMIN_TOKEN

    admin_auth = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
    admin = admin_service_pb2_grpc.AdminServiceStub(edge)
    made = await admin.CreateTenant(
        admin_service_pb2.CreateTenantRequest(tenant={"name": "batch-opening"}), metadata=admin_auth
    )
    reader = await admin.CreateApiKey(
        admin_service_pb2.CreateApiKeyRequest(tenant_id=made.tenant.id, scopes=["messages:read"]),
        metadata=admin_auth,
    )
    stub = mail_service_pb2_grpc.MailServiceStub(edge)
    batch = mail_service_pb2.SendBatchRequest(messages=[mail()])
    for metadata, code in (
        ((), grpc.StatusCode.UNAUTHENTICATED),
        ((("authorization", "Bearer pw_nope_nope"),), grpc.StatusCode.UNAUTHENTICATED),
        ((("authorization", f"Bearer {reader.secret}"),), grpc.StatusCode.PERMISSION_DENIED),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.SendBatch(batch, metadata=metadata)
        assert caught.value.code() == code
