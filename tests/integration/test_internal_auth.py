"""Internal RPCs need the deployment's internal token; reaching a service's port is not enough.

Each internal method is called directly on its service's port, as anything inside the network
(or tenant-written Jinja in the template service) could: without the token, with a wrong one,
with a public credential, and with the right one.
"""

from __future__ import annotations

import uuid
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from postwire.internal.v1 import (
    event_reader_service_pb2,
    event_reader_service_pb2_grpc,
    policy_service_pb2,
    policy_service_pb2_grpc,
    render_service_pb2,
    render_service_pb2_grpc,
)
from postwire.v1 import (
    mail_service_pb2,
    mail_service_pb2_grpc,
    suppression_service_pb2,
    suppression_service_pb2_grpc,
    template_service_pb2,
    template_service_pb2_grpc,
)

from libs.testing.polling import poll_until
from tests.conftest import ADMIN_TOKEN, INTERNAL_AUTH, INTERNAL_TOKEN, Tenant
from tests.integration.helpers import unique

HARD_BOUNCE = suppression_service_pb2.SUPPRESSION_REASON_HARD_BOUNCE
INTERNAL_METHODS = (
    "/postwire.internal.v1.PolicyService/Authenticate",
    "/postwire.internal.v1.PolicyService/AdmitMessage",
    "/postwire.internal.v1.PolicyService/AdmitBatch",
    "/postwire.internal.v1.PolicyService/AdmitMany",
    "/postwire.internal.v1.PolicyService/RecordSuppressions",
    "/postwire.internal.v1.RenderService/RenderMessage",
    "/postwire.internal.v1.RenderService/RenderMessages",
    "/postwire.internal.v1.EventReaderService/ListMessageEvents",
)


def _bad_credentials(tenant: Tenant) -> dict[str, tuple[tuple[str, str], ...]]:
    return {
        "none": (),
        "wrong token": (("authorization", "Bearer pwinternal_wrong"),),
        "token with a suffix": (("authorization", f"Bearer {INTERNAL_TOKEN}x"),),
        "not bearer": (("authorization", f"Basic {INTERNAL_TOKEN}"),),
        # A public credential is not an internal one.
        "tenant API key": tenant.metadata,
        "admin token": (("authorization", f"Bearer {ADMIN_TOKEN}"),),
    }


async def _refused(call: Any, request: Any, tenant: Tenant) -> None:
    for label, metadata in _bad_credentials(tenant).items():
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(request, metadata=metadata, timeout=10)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED, label
        assert "POSTWIRE_INTERNAL_TOKEN" in (caught.value.details() or ""), label


async def _template(edge: grpc.aio.Channel, tenant: Tenant) -> str:
    name = f"secret-{uuid.uuid4().hex[:8]}"
    await template_service_pb2_grpc.TemplateServiceStub(edge).CreateTemplate(
        template_service_pb2.CreateTemplateRequest(
            template={
                "name": name,
                "subject": "Reset code {{ code }}",
                "text_body": "Your code is {{ code }}",
            }
        ),
        metadata=tenant.metadata,
    )
    return name


def _vars(**values: object) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(values)
    return s


async def test_internal_create_tenant_is_gone(suite) -> None:
    async with grpc.aio.insecure_channel(suite.ports.addr("policy")) as channel:
        create = channel.unary_unary("/postwire.internal.v1.PolicyService/CreateTenant")
        request = b"\n\x08intruder"  # CreateTenantRequest{name: "intruder"} as it was
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await create(request, timeout=10)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # Even the internal token does not mint tenants: AdminService does, with the admin token.
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await create(request, metadata=INTERNAL_AUTH, timeout=10)
        assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_authenticate_needs_the_internal_token(suite, tenant) -> None:
    async with grpc.aio.insecure_channel(suite.ports.addr("policy")) as channel:
        stub = policy_service_pb2_grpc.PolicyServiceStub(channel)
        request = policy_service_pb2.AuthenticateRequest(api_key=tenant.api_key)
        await _refused(stub.Authenticate, request, tenant)
        answer = await stub.Authenticate(request, metadata=INTERNAL_AUTH, timeout=10)
    assert answer.tenant_id == tenant.id


async def test_admit_message_needs_the_internal_token(suite, tenant) -> None:
    # AdmitMessage acts for the tenant it names (submission authenticated the key before): only
    # a holder of the internal token may ask, or anyone could spend any tenant's quota.
    request = policy_service_pb2.AdmitMessageRequest(
        tenant_id=tenant.id, stream="transactional", recipients=["a@example.com"], from_domain="example.com"
    )
    async with grpc.aio.insecure_channel(suite.ports.addr("policy")) as channel:
        stub = policy_service_pb2_grpc.PolicyServiceStub(channel)
        await _refused(stub.AdmitMessage, request, tenant)
        answer = await stub.AdmitMessage(request, metadata=INTERNAL_AUTH, timeout=10)
    assert list(answer.decisions) == [policy_service_pb2.DECISION_ADMIT]


async def test_record_suppressions_needs_the_internal_token(suite, edge, tenant) -> None:
    refused, recorded = unique("refused"), unique("recorded")

    def request(address: str) -> policy_service_pb2.RecordSuppressionsRequest:
        return policy_service_pb2.RecordSuppressionsRequest(
            tenant_id=tenant.id, suppressions=[{"address": address, "reason": HARD_BOUNCE}]
        )

    async with grpc.aio.insecure_channel(suite.ports.addr("policy")) as channel:
        stub = policy_service_pb2_grpc.PolicyServiceStub(channel)
        await _refused(stub.RecordSuppressions, request(refused), tenant)
        await stub.RecordSuppressions(request(recorded), metadata=INTERNAL_AUTH, timeout=10)
    suppressions = suppression_service_pb2_grpc.SuppressionServiceStub(edge)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await suppressions.GetSuppression(
            suppression_service_pb2.GetSuppressionRequest(address=refused), metadata=tenant.metadata
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    got = await suppressions.GetSuppression(
        suppression_service_pb2.GetSuppressionRequest(address=recorded), metadata=tenant.metadata
    )
    assert got.suppression.reason == HARD_BOUNCE


async def test_render_message_needs_the_internal_token(suite, edge, tenant) -> None:
    name = await _template(edge, tenant)
    request = render_service_pb2.RenderMessageRequest(
        tenant_id=tenant.id, template_name=name, variables=_vars(code="123456")
    )
    async with grpc.aio.insecure_channel(suite.ports.addr("template")) as channel:
        stub = render_service_pb2_grpc.RenderServiceStub(channel)
        await _refused(stub.RenderMessage, request, tenant)
        answer = await stub.RenderMessage(request, metadata=INTERNAL_AUTH, timeout=10)
    assert answer.subject == "Reset code 123456"


async def test_render_messages_needs_the_internal_token(suite, edge, tenant) -> None:
    name = await _template(edge, tenant)
    request = render_service_pb2.RenderMessagesRequest(
        tenant_id=tenant.id,
        template_name=name,
        recipients=[render_service_pb2.RecipientVariables(variables=_vars(code="654321"))],
    )
    async with grpc.aio.insecure_channel(suite.ports.addr("template")) as channel:
        stub = render_service_pb2_grpc.RenderServiceStub(channel)
        await _refused(stub.RenderMessages, request, tenant)
        answer = await stub.RenderMessages(request, metadata=INTERNAL_AUTH, timeout=10)
    assert [r.text_body for r in answer.results] == ["Your code is 654321"]


async def test_list_message_events_needs_the_internal_token_and_keeps_to_the_tenant(
    suite, edge, tenant
) -> None:
    sent = await mail_service_pb2_grpc.MailServiceStub(edge).SendEmail(
        mail_service_pb2.SendEmailRequest(
            **{"from": {"address": "sender@example.com"}},
            to=[{"address": unique()}],
            subject="s",
            text_body="b",
        ),
        metadata=tenant.metadata,
    )
    async with grpc.aio.insecure_channel(suite.ports.addr("events")) as channel:
        stub = event_reader_service_pb2_grpc.EventReaderServiceStub(channel)
        request = event_reader_service_pb2.ListMessageEventsRequest(
            tenant_id=tenant.id, message_id=sent.message_id
        )
        await _refused(stub.ListMessageEvents, request, tenant)

        async def listed() -> list[str]:
            answer = await stub.ListMessageEvents(request, metadata=INTERNAL_AUTH, timeout=10)
            return [e.message_id for e in answer.events]

        assert set(await poll_until(listed, timeout=20, what="the message's events")) == {sent.message_id}
        elsewhere = await stub.ListMessageEvents(
            event_reader_service_pb2.ListMessageEventsRequest(
                tenant_id=str(uuid.uuid4()), message_id=sent.message_id
            ),
            metadata=INTERNAL_AUTH,
            timeout=10,
        )
        assert list(elsewhere.events) == []


@pytest.mark.parametrize("method", INTERNAL_METHODS)
async def test_the_edge_does_not_expose_internal_methods(edge, method: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await edge.unary_unary(method)(b"", metadata=INTERNAL_AUTH, timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_health_needs_no_token(suite) -> None:
    for name in ("policy", "template"):
        async with grpc.aio.insecure_channel(suite.ports.addr(name)) as channel:
            answer = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=10
            )
        assert answer.status == health_pb2.HealthCheckResponse.SERVING, name
