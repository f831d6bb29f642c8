"""Suppression lists through the public address: managed by the tenant, applied per recipient at
admission, scoped to unsubscribe groups, invisible to other tenants."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf import timestamp_pb2
from postwire.internal.v1 import policy_service_pb2, policy_service_pb2_grpc
from postwire.v1 import (
    admin_service_pb2,
    admin_service_pb2_grpc,
    event_pb2,
    mail_service_pb2_grpc,
    message_pb2,
    suppression_service_pb2,
    suppression_service_pb2_grpc,
)

from tests.conftest import ADMIN_TOKEN, INTERNAL_AUTH, create_tenant
from tests.integration.helpers import bad_request_fields, mail, unique, wait_for_events, wait_for_mail

HARD_BOUNCE = suppression_service_pb2.SUPPRESSION_REASON_HARD_BOUNCE
UNSUBSCRIBE = suppression_service_pb2.SUPPRESSION_REASON_UNSUBSCRIBE
MANUAL = suppression_service_pb2.SUPPRESSION_REASON_MANUAL


def _stub(edge: grpc.aio.Channel) -> suppression_service_pb2_grpc.SuppressionServiceStub:
    return suppression_service_pb2_grpc.SuppressionServiceStub(edge)


async def _add(
    edge, tenant, *entries: dict[str, object]
) -> suppression_service_pb2.BatchCreateSuppressionsResponse:
    return await _stub(edge).BatchCreateSuppressions(
        suppression_service_pb2.BatchCreateSuppressionsRequest(suppressions=list(entries)),
        metadata=tenant.metadata,
    )


async def test_suppressed_recipients_are_dropped_per_recipient_case_insensitively(
    edge, tenant, smtp_sink
) -> None:
    blocked, ok = unique("blocked"), unique("ok")
    await _add(edge, tenant, {"address": blocked.upper(), "reason": MANUAL})
    sent = await mail_service_pb2_grpc.MailServiceStub(edge).SendEmail(
        mail(to=[{"address": blocked}, {"address": ok}]), metadata=tenant.metadata
    )
    assert [(r.address, r.state) for r in sent.recipients] == [
        (blocked, message_pb2.RECIPIENT_STATE_SUPPRESSED),
        (ok, message_pb2.RECIPIENT_STATE_ACCEPTED),
    ]
    (received,) = await wait_for_mail(smtp_sink, ok)
    assert list(received.rcpt_tos) == [ok]
    events = await wait_for_events(edge, tenant.metadata, sent.message_id, [event_pb2.EVENT_TYPE_SUPPRESSED])
    assert [e.recipient for e in events if e.type == event_pb2.EVENT_TYPE_SUPPRESSED] == [blocked]
    await asyncio.sleep(1)
    assert not [m for m in smtp_sink.messages() if blocked in m.rcpt_tos]


async def test_unsubscribe_groups_only_stop_that_group(edge, tenant, smtp_sink) -> None:
    rcpt = unique("news")
    await _add(edge, tenant, {"address": rcpt, "reason": UNSUBSCRIBE, "unsubscribe_group": "product-news"})
    stub = mail_service_pb2_grpc.MailServiceStub(edge)
    news = await stub.SendEmail(
        mail(to=[{"address": rcpt}], unsubscribe_group="product-news"), metadata=tenant.metadata
    )
    assert news.recipients[0].state == message_pb2.RECIPIENT_STATE_SUPPRESSED
    reset = await stub.SendEmail(mail(to=[{"address": rcpt}], subject="Reset"), metadata=tenant.metadata)
    assert reset.recipients[0].state == message_pb2.RECIPIENT_STATE_ACCEPTED
    other = await stub.SendEmail(
        mail(to=[{"address": rcpt}], unsubscribe_group="billing-tips"), metadata=tenant.metadata
    )
    assert other.recipients[0].state == message_pb2.RECIPIENT_STATE_ACCEPTED
    received = await wait_for_mail(smtp_sink, rcpt, count=2)
    assert len(received) == 2


async def test_manage_the_list_get_list_filter_page_delete(edge, tenant) -> None:
    a, b, c = sorted([unique("a"), unique("b"), unique("c")])
    added = await _add(
        edge,
        tenant,
        {"address": a, "reason": HARD_BOUNCE, "source_message_id": "6f1e2d3c-0000-4000-8000-000000000001"},
        {"address": b, "reason": UNSUBSCRIBE, "unsubscribe_group": "news"},
        {"address": c, "reason": MANUAL},
    )
    assert [s.address for s in added.suppressions] == [a, b, c]
    assert added.suppressions[0].source_message_id == "6f1e2d3c-0000-4000-8000-000000000001"
    assert all(s.HasField("create_time") for s in added.suppressions)
    stub = _stub(edge)
    got = await stub.GetSuppression(
        suppression_service_pb2.GetSuppressionRequest(address=b, unsubscribe_group="news"),
        metadata=tenant.metadata,
    )
    assert got.suppression.reason == UNSUBSCRIBE
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetSuppression(
            suppression_service_pb2.GetSuppressionRequest(address=b), metadata=tenant.metadata
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND

    pages, token = [], ""
    while True:
        page = await stub.ListSuppressions(
            suppression_service_pb2.ListSuppressionsRequest(page_size=1, page_token=token),
            metadata=tenant.metadata,
        )
        pages += [s.address for s in page.suppressions]
        token = page.next_page_token
        if not token:
            break
    assert pages == [a, b, c]
    bounced = await stub.ListSuppressions(
        suppression_service_pb2.ListSuppressionsRequest(reason=HARD_BOUNCE), metadata=tenant.metadata
    )
    assert [s.address for s in bounced.suppressions] == [a]
    grouped = await stub.ListSuppressions(
        suppression_service_pb2.ListSuppressionsRequest(unsubscribe_group="news"), metadata=tenant.metadata
    )
    assert [s.address for s in grouped.suppressions] == [b]

    await stub.DeleteSuppression(
        suppression_service_pb2.DeleteSuppressionRequest(address=c), metadata=tenant.metadata
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.DeleteSuppression(
            suppression_service_pb2.DeleteSuppressionRequest(address=c), metadata=tenant.metadata
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    # Deleted here, so this replica sends to it again at once.
    sent = await mail_service_pb2_grpc.MailServiceStub(edge).SendEmail(
        mail(to=[{"address": c}]), metadata=tenant.metadata
    )
    assert sent.recipients[0].state == message_pb2.RECIPIENT_STATE_ACCEPTED


async def test_a_bad_entry_refuses_the_whole_import(edge, tenant) -> None:
    good = unique("good")
    past = timestamp_pb2.Timestamp()
    past.FromDatetime(datetime.now(UTC) - timedelta(minutes=1))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _add(
            edge,
            tenant,
            {"address": good, "reason": MANUAL},
            {"address": "not-an-address", "reason": MANUAL},
            {"address": unique(), "reason": HARD_BOUNCE, "unsubscribe_group": "news"},
            {"address": unique()},
            {"address": unique(), "reason": MANUAL, "expire_time": past},
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request_fields(caught.value) == [
        "suppressions[1].address",
        "suppressions[2].unsubscribe_group",
        "suppressions[3].reason",
        "suppressions[4].expire_time",
    ]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _stub(edge).GetSuppression(
            suppression_service_pb2.GetSuppressionRequest(address=good), metadata=tenant.metadata
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_an_expiring_suppression_stops_applying(edge, tenant) -> None:
    rcpt = unique("brief")
    soon = timestamp_pb2.Timestamp()
    # Long enough that the first send is made before it expires on a busy machine.
    expires = datetime.now(UTC) + timedelta(seconds=5)
    soon.FromDatetime(expires)
    await _add(edge, tenant, {"address": rcpt, "reason": MANUAL, "expire_time": soon})
    stub = mail_service_pb2_grpc.MailServiceStub(edge)
    first = await stub.SendEmail(mail(to=[{"address": rcpt}]), metadata=tenant.metadata)
    assert datetime.now(UTC) < expires, "the first send came too late to test anything"
    assert first.recipients[0].state == message_pb2.RECIPIENT_STATE_SUPPRESSED
    # Past the expiry, and past the 1 s admission cache of the test settings.
    await asyncio.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()) + 1.5)
    later = await stub.SendEmail(mail(to=[{"address": rcpt}]), metadata=tenant.metadata)
    assert later.recipients[0].state == message_pb2.RECIPIENT_STATE_ACCEPTED


async def test_suppressions_need_their_scopes(edge) -> None:
    admin = admin_service_pb2_grpc.AdminServiceStub(edge)
    auth = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
    made = await admin.CreateTenant(
        admin_service_pb2.CreateTenantRequest(tenant={"name": "ro"}), metadata=auth
    )
    key = await admin.CreateApiKey(
        admin_service_pb2.CreateApiKeyRequest(tenant_id=made.tenant.id, scopes=["suppressions:read"]),
        metadata=auth,
    )
    reader = (("authorization", f"Bearer {key.secret}"),)
    listed = await _stub(edge).ListSuppressions(
        suppression_service_pb2.ListSuppressionsRequest(), metadata=reader
    )
    assert list(listed.suppressions) == []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _stub(edge).BatchCreateSuppressions(
            suppression_service_pb2.BatchCreateSuppressionsRequest(
                suppressions=[{"address": unique(), "reason": MANUAL}]
            ),
            metadata=reader,
        )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "'suppressions:write'" in (caught.value.details() or "")


async def test_platform_records_bounces_through_the_internal_call(suite, edge, tenant) -> None:
    rcpt, message_id = unique("bounced"), str(uuid.uuid4())
    async with grpc.aio.insecure_channel(suite.ports.addr("policy")) as channel:
        await policy_service_pb2_grpc.PolicyServiceStub(channel).RecordSuppressions(
            policy_service_pb2.RecordSuppressionsRequest(
                tenant_id=tenant.id,
                suppressions=[{"address": rcpt, "reason": HARD_BOUNCE, "source_message_id": message_id}],
            ),
            metadata=INTERNAL_AUTH,
            timeout=10,
        )
    got = await _stub(edge).GetSuppression(
        suppression_service_pb2.GetSuppressionRequest(address=rcpt), metadata=tenant.metadata
    )
    assert (got.suppression.reason, got.suppression.source_message_id) == (HARD_BOUNCE, message_id)


async def test_another_tenants_list_is_invisible_and_does_not_apply(suite, edge, tenant) -> None:
    rcpt = unique("shared")
    await _add(edge, tenant, {"address": rcpt, "reason": MANUAL})
    other = await create_tenant(suite)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _stub(edge).GetSuppression(
            suppression_service_pb2.GetSuppressionRequest(address=rcpt), metadata=other.metadata
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    listed = await _stub(edge).ListSuppressions(
        suppression_service_pb2.ListSuppressionsRequest(), metadata=other.metadata
    )
    assert rcpt not in [s.address for s in listed.suppressions]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _stub(edge).DeleteSuppression(
            suppression_service_pb2.DeleteSuppressionRequest(address=rcpt), metadata=other.metadata
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    sent = await mail_service_pb2_grpc.MailServiceStub(edge).SendEmail(
        mail(to=[{"address": rcpt}]), metadata=other.metadata
    )
    assert sent.recipients[0].state == message_pb2.RECIPIENT_STATE_ACCEPTED


async def test_recording_for_an_unknown_tenant_is_not_found(suite) -> None:
    async with grpc.aio.insecure_channel(suite.ports.addr("policy")) as channel:
        stub = policy_service_pb2_grpc.PolicyServiceStub(channel)
        for tenant_id in (str(uuid.uuid4()), "not-a-uuid"):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.RecordSuppressions(
                    policy_service_pb2.RecordSuppressionsRequest(
                        tenant_id=tenant_id, suppressions=[{"address": unique(), "reason": HARD_BOUNCE}]
                    ),
                    metadata=INTERNAL_AUTH,
                    timeout=10,
                )
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND
