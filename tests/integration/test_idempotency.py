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
