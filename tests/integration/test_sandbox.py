"""Sandbox mode, per request and per tenant: every step and event happens, nothing is delivered."""

from __future__ import annotations

import asyncio

from postwire.v1 import (
    admin_service_pb2,
    admin_service_pb2_grpc,
    event_pb2,
    mail_service_pb2,
    mail_service_pb2_grpc,
    message_pb2,
)

from tests.conftest import ADMIN_TOKEN
from tests.integration.helpers import mail, unique, wait_for_events, wait_for_mail

ADMIN = (("authorization", f"Bearer {ADMIN_TOKEN}"),)


async def _sent_nothing_to(smtp_sink, *recipients: str) -> bool:
    # The DELIVERED event is written after the (skipped) SMTP step; give a stray send time to land.
    await asyncio.sleep(1)
    return not [m for m in smtp_sink.messages() if set(m.rcpt_tos) & set(recipients)]


async def test_a_sandboxed_request_runs_everything_but_delivery(edge, tenant, smtp_sink) -> None:
    rcpt, cc = unique("sandboxed"), unique("cc")
    stub = mail_service_pb2_grpc.MailServiceStub(edge)
    sent = await stub.SendEmail(
        mail(to=[{"address": rcpt}], cc=[{"address": cc}], sandbox=True), metadata=tenant.metadata
    )
    events = await wait_for_events(
        edge,
        tenant.metadata,
        sent.message_id,
        [event_pb2.EVENT_TYPE_ACCEPTED] * 2 + [event_pb2.EVENT_TYPE_DELIVERED] * 2,
    )
    delivered = [e for e in events if e.type == event_pb2.EVENT_TYPE_DELIVERED]
    assert {e.recipient for e in delivered} == {rcpt, cc}
    assert all(e.reason == "sandbox: nothing was sent to the recipient" for e in delivered)
    assert all(e.smtp_reply.text == "sandbox: accepted by Postwire, not delivered" for e in delivered)
    got = await stub.GetMessage(
        mail_service_pb2.GetMessageRequest(message_id=sent.message_id), metadata=tenant.metadata
    )
    assert got.message.sandbox
    assert got.message.rfc822_message_id  # the MIME was built, as for a real send
    assert [r.state for r in got.message.recipients] == [message_pb2.RECIPIENT_STATE_DELIVERED] * 2
    assert await _sent_nothing_to(smtp_sink, rcpt, cc)

    # The same tenant's next send without the flag is delivered.
    real = unique("real")
    await stub.SendEmail(mail(to=[{"address": real}]), metadata=tenant.metadata)
    await wait_for_mail(smtp_sink, real)


async def test_a_tenant_in_sandbox_mode_never_delivers(edge, smtp_sink) -> None:
    admin = admin_service_pb2_grpc.AdminServiceStub(edge)
    made = await admin.CreateTenant(
        admin_service_pb2.CreateTenantRequest(tenant={"name": "staging"}), metadata=ADMIN
    )
    key = await admin.CreateApiKey(
        admin_service_pb2.CreateApiKeyRequest(
            tenant_id=made.tenant.id, scopes=["send", "events:read", "messages:read"]
        ),
        metadata=ADMIN,
    )
    auth = (("authorization", f"Bearer {key.secret}"),)
    stub = mail_service_pb2_grpc.MailServiceStub(edge)
    before = unique("before")
    await stub.SendEmail(mail(to=[{"address": before}]), metadata=auth)
    await wait_for_mail(smtp_sink, before)

    await admin.UpdateTenant(
        admin_service_pb2.UpdateTenantRequest(
            tenant={"id": made.tenant.id, "sandbox": True}, update_mask={"paths": ["sandbox"]}
        ),
        metadata=ADMIN,
    )
    rcpt = unique("staging")
    sent = await stub.SendEmail(mail(to=[{"address": rcpt}]), metadata=auth)
    await wait_for_events(edge, auth, sent.message_id, [event_pb2.EVENT_TYPE_DELIVERED])
    got = await stub.GetMessage(mail_service_pb2.GetMessageRequest(message_id=sent.message_id), metadata=auth)
    assert got.message.sandbox
    assert await _sent_nothing_to(smtp_sink, rcpt)
