"""AIP-155 `request_id` on CreateTemplate: a retried create answers like the first one and creates
nothing more; the same id with another template is refused naming `request_id`."""

from __future__ import annotations

import uuid

import grpc
import pytest
from postwire.v1 import template_pb2, template_service_pb2, template_service_pb2_grpc

from libs.embedded.suite import Suite
from tests.conftest import Tenant, create_tenant
from tests.integration.helpers import bad_request_fields


def _request(
    name: str, request_id: str, subject: str = "Hello {{ name }}"
) -> template_service_pb2.CreateTemplateRequest:
    return template_service_pb2.CreateTemplateRequest(
        template=template_pb2.Template(name=name, subject=subject, text_body="Hi {{ name }}"),
        request_id=request_id,
    )


def _stub(edge: grpc.aio.Channel) -> template_service_pb2_grpc.TemplateServiceAsyncStub:
    return template_service_pb2_grpc.TemplateServiceStub(edge)


async def _names(
    stub: template_service_pb2_grpc.TemplateServiceAsyncStub, tenant: Tenant, prefix: str
) -> list[str]:
    answer = await stub.ListTemplates(
        template_service_pb2.ListTemplatesRequest(name_prefix=prefix), metadata=tenant.metadata
    )
    return [t.name for t in answer.templates]


async def test_a_retried_create_returns_the_first_answer_and_creates_nothing(
    edge: grpc.aio.Channel, tenant: Tenant
) -> None:
    stub = _stub(edge)
    prefix = f"rid-{uuid.uuid4().hex[:8]}"
    request_id = str(uuid.uuid4())
    first = await stub.CreateTemplate(_request(f"{prefix}-a", request_id), metadata=tenant.metadata)
    again = await stub.CreateTemplate(_request(f"{prefix}-a", request_id), metadata=tenant.metadata)
    assert again.SerializeToString(deterministic=True) == first.SerializeToString(deterministic=True)
    assert await _names(stub, tenant, prefix) == [f"{prefix}-a"]
    got = await stub.GetTemplate(
        template_service_pb2.GetTemplateRequest(template=first.template.id), metadata=tenant.metadata
    )
    assert got.template.version == 1


async def test_the_same_request_id_with_another_template_is_already_exists(
    edge: grpc.aio.Channel, tenant: Tenant
) -> None:
    stub = _stub(edge)
    prefix = f"rid-{uuid.uuid4().hex[:8]}"
    request_id = str(uuid.uuid4())
    await stub.CreateTemplate(_request(f"{prefix}-a", request_id), metadata=tenant.metadata)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreateTemplate(_request(f"{prefix}-b", request_id), metadata=tenant.metadata)
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert bad_request_fields(caught.value) == ["request_id"]
    assert await _names(stub, tenant, prefix) == [f"{prefix}-a"]


async def test_request_ids_are_per_tenant(suite: Suite, edge: grpc.aio.Channel, tenant: Tenant) -> None:
    other_tenant = await create_tenant(suite)
    stub = _stub(edge)
    prefix = f"rid-{uuid.uuid4().hex[:8]}"
    request_id = str(uuid.uuid4())
    await stub.CreateTemplate(_request(f"{prefix}-a", request_id), metadata=tenant.metadata)
    theirs = await stub.CreateTemplate(_request(f"{prefix}-b", request_id), metadata=other_tenant.metadata)
    assert theirs.template.name == f"{prefix}-b"
    assert await _names(stub, other_tenant, prefix) == [f"{prefix}-b"]


async def test_a_malformed_request_id_is_invalid_argument_and_creates_nothing(
    edge: grpc.aio.Channel, tenant: Tenant
) -> None:
    stub = _stub(edge)
    prefix = f"rid-{uuid.uuid4().hex[:8]}"
    for bad in ("new\nline", "x" * 257):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.CreateTemplate(_request(f"{prefix}-a", bad), metadata=tenant.metadata)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert bad_request_fields(caught.value) == ["request_id"]
    assert await _names(stub, tenant, prefix) == []


async def test_a_create_that_fails_does_not_use_up_its_request_id(
    edge: grpc.aio.Channel, tenant: Tenant
) -> None:
    stub = _stub(edge)
    prefix = f"rid-{uuid.uuid4().hex[:8]}"
    request_id = str(uuid.uuid4())
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreateTemplate(
            _request(f"{prefix}-a", request_id, subject="{{ oops"), metadata=tenant.metadata
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    created = await stub.CreateTemplate(_request(f"{prefix}-a", request_id), metadata=tenant.metadata)
    assert created.template.name == f"{prefix}-a"


async def test_a_retry_answers_first_even_when_the_request_would_no_longer_be_valid(
    edge: grpc.aio.Channel, tenant: Tenant
) -> None:
    stub = _stub(edge)
    prefix = f"rid-{uuid.uuid4().hex[:8]}"
    await stub.CreateTemplate(
        template_service_pb2.CreateTemplateRequest(
            template=template_pb2.Template(
                name=f"{prefix}-base",
                kind=template_pb2.TEMPLATE_KIND_LAYOUT,
                html_body="<div>{% block body %}{% endblock %}</div>",
            )
        ),
        metadata=tenant.metadata,
    )
    create = template_service_pb2.CreateTemplateRequest(
        template=template_pb2.Template(
            name=f"{prefix}-welcome",
            subject="Hi",
            html_body=f'{{% extends "{prefix}-base" %}}{{% block body %}}Hi{{% endblock %}}',
        ),
        request_id=str(uuid.uuid4()),
    )
    first = await stub.CreateTemplate(create, metadata=tenant.metadata)
    # The layout loses its HTML: the same create, made afresh, would now be refused.
    await stub.UpdateTemplate(
        template_service_pb2.UpdateTemplateRequest(
            template=template_pb2.Template(name=f"{prefix}-base", text_body="{% block body %}{% endblock %}"),
            update_mask={"paths": ["html_body", "text_body"]},
        ),
        metadata=tenant.metadata,
    )
    again = await stub.CreateTemplate(create, metadata=tenant.metadata)
    assert again == first
    assert await _names(stub, tenant, prefix) == [f"{prefix}-base", f"{prefix}-welcome"]
