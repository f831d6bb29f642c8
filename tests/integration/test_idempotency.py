"""The same idempotency key from the same tenant sends once; a different payload is refused."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest
from postwire.v1 import mail_service_pb2_grpc

from tests.conftest import create_tenant
from tests.integration.helpers import bad_request_fields, mail, unique, wait_for_mail


async def test_repeated_key_returns_the_first_id_and_sends_once(edge, tenant, smtp_sink) -> None:
    rcpt = unique()
    request = mail(to=[{"address": rcpt}], idempotency_key=f"order-{uuid.uuid4()}")
    stub = mail_service_pb2_grpc.MailServiceStub(edge)
    first = await stub.SendEmail(request, metadata=tenant.metadata)
    # Concurrent retries race the first insert; every one must get the same id.
    again = await asyncio.gather(*(stub.SendEmail(request, metadata=tenant.metadata) for _ in range(5)))
    assert {a.message_id for a in again} == {first.message_id}
    await wait_for_mail(smtp_sink, rcpt)
    # Give any duplicate the time a delivery takes, then count transactions for the recipient.
    later = unique()
    await stub.SendEmail(mail(to=[{"address": later}]), metadata=tenant.metadata)
    await wait_for_mail(smtp_sink, later)
    assert len([m for m in smtp_sink.messages() if rcpt in m.rcpt_tos]) == 1


async def test_same_key_with_a_different_payload_is_already_exists(edge, tenant) -> None:
    key = f"k-{uuid.uuid4()}"
    stub = mail_service_pb2_grpc.MailServiceStub(edge)
    first = await stub.SendEmail(mail(idempotency_key=key, subject="one"), metadata=tenant.metadata)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.SendEmail(mail(idempotency_key=key, subject="two"), metadata=tenant.metadata)
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert bad_request_fields(caught.value) == ["idempotency_key"]
    assert first.message_id not in (caught.value.details() or "")


async def test_keys_are_per_tenant(suite, edge, tenant, smtp_sink) -> None:
    other = await create_tenant(suite)
    key = f"shared-{uuid.uuid4()}"
    a, b = unique(), unique()
    stub = mail_service_pb2_grpc.MailServiceStub(edge)
    first = await stub.SendEmail(mail(to=[{"address": a}], idempotency_key=key), metadata=tenant.metadata)
    second = await stub.SendEmail(mail(to=[{"address": b}], idempotency_key=key), metadata=other.metadata)
    assert first.message_id != second.message_id
    await wait_for_mail(smtp_sink, a)
    await wait_for_mail(smtp_sink, b)


async def test_replays_cost_no_quota_and_get_the_first_answer_even_when_the_limit_is_reached(
    suite, edge
) -> None:
    """A replay is answered before admission: it consumes no rate or quota, and it gets the
    first id even when a new send would now be refused."""
    from postwire.v1 import admin_service_pb2, admin_service_pb2_grpc

    from tests.conftest import ADMIN_TOKEN

    admin_auth = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
    admin = admin_service_pb2_grpc.AdminServiceStub(edge)
    made = await admin.CreateTenant(
        admin_service_pb2.CreateTenantRequest(
            tenant={"name": "quota", "limits": [{"stream": "*", "recipients_per_day": 2}]}
        ),
        metadata=admin_auth,
    )
    key = await admin.CreateApiKey(
        admin_service_pb2.CreateApiKeyRequest(tenant_id=made.tenant.id, scopes=["send"]), metadata=admin_auth
    )
    auth = (("authorization", f"Bearer {key.secret}"),)
    stub = mail_service_pb2_grpc.MailServiceStub(edge)
    first_request = mail(idempotency_key=f"k-{uuid.uuid4()}")
    first = await stub.SendEmail(first_request, metadata=auth)
    for _ in range(4):
        again = await stub.SendEmail(first_request, metadata=auth)
        assert again.message_id == first.message_id
    # The replays ate nothing: the second of the two recipients a day still fits.
    second_request = mail(idempotency_key=f"k-{uuid.uuid4()}")
    second = await stub.SendEmail(second_request, metadata=auth)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.SendEmail(mail(idempotency_key=f"k-{uuid.uuid4()}"), metadata=auth)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # With the quota spent, both accepted sends still replay to their first answer.
    assert (await stub.SendEmail(first_request, metadata=auth)).message_id == first.message_id
    assert (await stub.SendEmail(second_request, metadata=auth)).message_id == second.message_id
    # A reused key with another payload is still refused, also with the quota spent.
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.SendEmail(mail(idempotency_key=first_request.idempotency_key, subject="other"), metadata=auth)
    assert refused.value.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_replay_answers_without_the_send_scope_checks_being_skipped(suite, edge) -> None:
    """Authentication still comes before the replay: a key without `send` never learns an id."""
    from postwire.v1 import admin_service_pb2, admin_service_pb2_grpc

    from tests.conftest import ADMIN_TOKEN

    admin_auth = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
    admin = admin_service_pb2_grpc.AdminServiceStub(edge)
    made = await admin.CreateTenant(
        admin_service_pb2.CreateTenantRequest(tenant={"name": "scoped"}), metadata=admin_auth
    )
    sender = await admin.CreateApiKey(
        admin_service_pb2.CreateApiKeyRequest(tenant_id=made.tenant.id, scopes=["send"]), metadata=admin_auth
    )
    reader = await admin.CreateApiKey(
        admin_service_pb2.CreateApiKeyRequest(tenant_id=made.tenant.id, scopes=["messages:read"]),
        metadata=admin_auth,
    )
    stub = mail_service_pb2_grpc.MailServiceStub(edge)
    request = mail(idempotency_key=f"k-{uuid.uuid4()}")
    await stub.SendEmail(request, metadata=(("authorization", f"Bearer {sender.secret}"),))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.SendEmail(request, metadata=(("authorization", f"Bearer {reader.secret}"),))
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await stub.SendEmail(request, metadata=(("authorization", "Bearer pw_nope_nope"),))
    assert unknown.value.code() == grpc.StatusCode.UNAUTHENTICATED
