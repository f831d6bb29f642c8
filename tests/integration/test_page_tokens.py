"""Every List method's page token is sealed, bound to its caller and filters, and refused alike.

A forged, foreign, reused-with-other-filters or cross-method token gets one INVALID_ARGUMENT naming
page_token with the same text, never INTERNAL and never another tenant's page.
"""

from __future__ import annotations

import base64
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message
from postwire.v1 import (
    admin_service_pb2,
    admin_service_pb2_grpc,
    domain_service_pb2,
    domain_service_pb2_grpc,
    event_pb2,
    event_service_pb2,
    event_service_pb2_grpc,
    mail_service_pb2_grpc,
    suppression_service_pb2,
    suppression_service_pb2_grpc,
    template_service_pb2,
    template_service_pb2_grpc,
)

from libs.embedded.ports import free_port
from libs.embedded.process import ManagedProcess
from libs.embedded.suite import Suite
from libs.testing.polling import poll_until
from libs.token_keys import generate_token_keys
from tests.conftest import ADMIN_TOKEN, TOKEN_KEYS, Tenant, create_tenant
from tests.integration.helpers import bad_request_fields, mail, unique

ADMIN = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
INVALID = "page_token is invalid or expired; repeat the request without it"

Call = Callable[[grpc.aio.Channel, Any, Message], Awaitable[tuple[list[str], str]]]


@dataclass(frozen=True)
class Lister:
    name: str
    # Creates at least three items for the tenant and returns the request (filters set) that lists them.
    seed: Callable[[grpc.aio.Channel, Tenant], Awaitable[Message]]
    # One call: the listed items' ids and the next page token.
    call: Call
    # The same request with one filter changed; None when the method has no filters.
    other_filters: Callable[[Message], Message] | None
    admin: bool = False

    def metadata(self, tenant: Tenant) -> Any:
        return ADMIN if self.admin else tenant.metadata


def _with(request: Message, **fields: Any) -> Message:
    copy = type(request)()
    copy.CopyFrom(request)
    for name, value in fields.items():
        if isinstance(value, list):
            getattr(copy, name).extend(value)
        else:
            setattr(copy, name, value)
    return copy


async def _seed_templates(edge: grpc.aio.Channel, tenant: Tenant) -> Message:
    stub = template_service_pb2_grpc.TemplateServiceStub(edge)
    prefix = f"pt-{uuid.uuid4().hex[:8]}-"
    for n in range(3):
        await stub.CreateTemplate(
            template_service_pb2.CreateTemplateRequest(
                template={"name": f"{prefix}{n}", "subject": "Hi", "text_body": "Hello"}
            ),
            metadata=tenant.metadata,
        )
    return template_service_pb2.ListTemplatesRequest(name_prefix=prefix)


async def _list_templates(edge: grpc.aio.Channel, metadata: Any, request: Message) -> tuple[list[str], str]:
    answer = await template_service_pb2_grpc.TemplateServiceStub(edge).ListTemplates(
        request, metadata=metadata
    )
    return [t.name for t in answer.templates], answer.next_page_token


async def _seed_domains(edge: grpc.aio.Channel, tenant: Tenant) -> Message:
    stub = domain_service_pb2_grpc.DomainServiceStub(edge)
    for n in range(3):
        await stub.CreateDomain(
            domain_service_pb2.CreateDomainRequest(name=f"pt{n}-{uuid.uuid4().hex[:8]}.example"),
            metadata=tenant.metadata,
        )
    return domain_service_pb2.ListDomainsRequest()


async def _list_domains(edge: grpc.aio.Channel, metadata: Any, request: Message) -> tuple[list[str], str]:
    answer = await domain_service_pb2_grpc.DomainServiceStub(edge).ListDomains(request, metadata=metadata)
    return [d.name for d in answer.domains], answer.next_page_token


async def _seed_suppressions(edge: grpc.aio.Channel, tenant: Tenant) -> Message:
    await suppression_service_pb2_grpc.SuppressionServiceStub(edge).BatchCreateSuppressions(
        suppression_service_pb2.BatchCreateSuppressionsRequest(
            suppressions=[
                {"address": unique("pt"), "reason": suppression_service_pb2.SUPPRESSION_REASON_MANUAL}
                for _ in range(3)
            ]
        ),
        metadata=tenant.metadata,
    )
    return suppression_service_pb2.ListSuppressionsRequest()


async def _list_suppressions(
    edge: grpc.aio.Channel, metadata: Any, request: Message
) -> tuple[list[str], str]:
    stub = suppression_service_pb2_grpc.SuppressionServiceStub(edge)
    answer = await stub.ListSuppressions(request, metadata=metadata)
    return [f"{s.address}/{s.unsubscribe_group}" for s in answer.suppressions], answer.next_page_token


async def _seed_events(edge: grpc.aio.Channel, tenant: Tenant) -> Message:
    stub = mail_service_pb2_grpc.MailServiceStub(edge)
    for _ in range(3):
        await stub.SendEmail(mail(), metadata=tenant.metadata)
    request = event_service_pb2.ListEventsRequest(types=[event_pb2.EVENT_TYPE_ACCEPTED])

    async def three() -> bool:
        ids, _ = await _list_events(edge, tenant.metadata, _with(request, page_size=1000))
        return len(ids) >= 3

    await poll_until(three, timeout=30, what="three accepted events")
    return request


async def _list_events(edge: grpc.aio.Channel, metadata: Any, request: Message) -> tuple[list[str], str]:
    answer = await event_service_pb2_grpc.EventServiceStub(edge).ListEvents(request, metadata=metadata)
    return [e.id for e in answer.events], answer.next_page_token


async def _seed_tenants(edge: grpc.aio.Channel, tenant: Tenant) -> Message:
    stub = admin_service_pb2_grpc.AdminServiceStub(edge)
    for _ in range(3):
        await stub.CreateTenant(admin_service_pb2.CreateTenantRequest(tenant={"name": "pt"}), metadata=ADMIN)
    return admin_service_pb2.ListTenantsRequest()


async def _list_tenants(edge: grpc.aio.Channel, metadata: Any, request: Message) -> tuple[list[str], str]:
    answer = await admin_service_pb2_grpc.AdminServiceStub(edge).ListTenants(request, metadata=metadata)
    return [t.id for t in answer.tenants], answer.next_page_token


async def _seed_keys(edge: grpc.aio.Channel, tenant: Tenant) -> Message:
    stub = admin_service_pb2_grpc.AdminServiceStub(edge)
    for _ in range(3):
        await stub.CreateApiKey(
            admin_service_pb2.CreateApiKeyRequest(tenant_id=tenant.id, scopes=["send"]), metadata=ADMIN
        )
    return admin_service_pb2.ListApiKeysRequest(tenant_id=tenant.id)


async def _list_keys(edge: grpc.aio.Channel, metadata: Any, request: Message) -> tuple[list[str], str]:
    answer = await admin_service_pb2_grpc.AdminServiceStub(edge).ListApiKeys(request, metadata=metadata)
    return [k.id for k in answer.api_keys], answer.next_page_token


LISTERS = [
    Lister("ListTemplates", _seed_templates, _list_templates, lambda r: _with(r, name_prefix="pt-")),
    Lister("ListDomains", _seed_domains, _list_domains, None),
    Lister(
        "ListSuppressions",
        _seed_suppressions,
        _list_suppressions,
        lambda r: _with(r, reason=suppression_service_pb2.SUPPRESSION_REASON_MANUAL),
    ),
    Lister(
        "ListEvents", _seed_events, _list_events, lambda r: _with(r, types=[event_pb2.EVENT_TYPE_DELIVERED])
    ),
    Lister("ListTenants", _seed_tenants, _list_tenants, None, admin=True),
    Lister("ListApiKeys", _seed_keys, _list_keys, lambda r: _with(r, show_revoked=True), admin=True),
]
TENANT_LISTERS = [lister for lister in LISTERS if not lister.admin]
FILTERED = [lister for lister in LISTERS if lister.other_filters is not None]


def _ids(listers: list[Lister]) -> list[str]:
    return [lister.name for lister in listers]


async def _first_token(edge: grpc.aio.Channel, lister: Lister, tenant: Tenant, request: Message) -> str:
    _, token = await lister.call(edge, lister.metadata(tenant), _with(request, page_size=1))
    assert token, f"{lister.name} gave no next page token for page_size=1 over three items"
    return token


async def _assert_refused(
    edge: grpc.aio.Channel, lister: Lister, metadata: Any, request: Message, token: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await lister.call(edge, metadata, _with(request, page_size=1, page_token=token))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (token, caught.value.details())
    assert bad_request_fields(caught.value) == ["page_token"]
    # One text for every failure, so the answer says nothing about why a token was refused.
    assert caught.value.details() == f"page_token: {INVALID}"


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize("lister", LISTERS, ids=_ids(LISTERS))
async def test_paging_lists_every_item_once_in_order(edge, tenant, lister: Lister) -> None:
    request = await lister.seed(edge, tenant)
    metadata = lister.metadata(tenant)
    everything, last = await lister.call(edge, metadata, _with(request, page_size=1000))
    assert len(everything) >= 3 and not last
    paged: list[str] = []
    token = ""
    for _ in range(len(everything) + 1):
        ids, token = await lister.call(edge, metadata, _with(request, page_size=2, page_token=token))
        paged += ids
        if not token:
            break
    assert paged == everything


@pytest.mark.parametrize("lister", LISTERS, ids=_ids(LISTERS))
@pytest.mark.parametrize(
    "forged",
    [
        _b64("v1:1"),
        _b64("v1:0"),
        _b64("v1:99999999999999999999999999"),
        _b64("v1:a"),
        _b64(f"v1:{'9' * 40}|{uuid.uuid4()}"),
        "garbage!",
        "k1.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "dev.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ],
    ids=["v1-1", "v1-0", "v1-huge", "v1-name", "v1-time-id", "garbage", "kid-noise", "dev-noise"],
)
async def test_hand_made_tokens_are_refused(edge, tenant, lister: Lister, forged: str) -> None:
    request = await lister.seed(edge, tenant) if lister.name == "ListApiKeys" else _default_request(lister)
    await _assert_refused(edge, lister, lister.metadata(tenant), request, forged)


def _default_request(lister: Lister) -> Message:
    return {
        "ListTemplates": template_service_pb2.ListTemplatesRequest(),
        "ListDomains": domain_service_pb2.ListDomainsRequest(),
        "ListSuppressions": suppression_service_pb2.ListSuppressionsRequest(),
        "ListEvents": event_service_pb2.ListEventsRequest(),
        "ListTenants": admin_service_pb2.ListTenantsRequest(),
    }[lister.name]


@pytest.mark.parametrize("lister", TENANT_LISTERS, ids=_ids(TENANT_LISTERS))
async def test_another_tenants_token_is_refused(edge, suite, tenant, lister: Lister) -> None:
    request = await lister.seed(edge, tenant)
    token = await _first_token(edge, lister, tenant, request)
    other = await create_tenant(suite)
    await lister.seed(edge, other)
    await _assert_refused(edge, lister, other.metadata, request, token)


@pytest.mark.parametrize("lister", FILTERED, ids=_ids(FILTERED))
async def test_a_token_reused_with_other_filters_is_refused(edge, tenant, lister: Lister) -> None:
    request = await lister.seed(edge, tenant)
    token = await _first_token(edge, lister, tenant, request)
    assert lister.other_filters is not None
    await _assert_refused(edge, lister, lister.metadata(tenant), lister.other_filters(request), token)
    # page_size is not a filter: the same token with another page size still works.
    ids, _ = await lister.call(edge, lister.metadata(tenant), _with(request, page_size=5, page_token=token))
    assert ids


@pytest.mark.parametrize(
    ("source", "target"),
    [("ListDomains", "ListTemplates"), ("ListTemplates", "ListSuppressions"), ("ListTenants", "ListApiKeys")],
)
async def test_a_token_from_another_list_method_is_refused(edge, tenant, source: str, target: str) -> None:
    by_name = {lister.name: lister for lister in LISTERS}
    source_lister, target_lister = by_name[source], by_name[target]
    token = await _first_token(edge, source_lister, tenant, await source_lister.seed(edge, tenant))
    request = await target_lister.seed(edge, tenant)
    await _assert_refused(edge, target_lister, target_lister.metadata(tenant), request, token)


@contextmanager
def _template_replicas(suite: Suite, rings: list[str]) -> Iterator[list[str]]:
    """Extra template replicas, one per key ring, beside the suite's own (left untouched)."""
    replicas = []
    for n, ring in enumerate(rings):
        addr = f"127.0.0.1:{free_port()}"
        env = suite.service_env("template") | {"POSTWIRE_LISTEN": addr, "POSTWIRE_TOKEN_KEYS": ring}
        proc = ManagedProcess(
            f"template-ring{n}",
            [sys.executable, "-m", "services.template"],
            env=env,
            log_path=suite.data_dir / "logs" / f"template-ring{n}-{uuid.uuid4().hex[:6]}.log",
        )
        proc.spawn()
        replicas.append((addr, proc))
    try:
        for _, proc in replicas:
            proc.wait_ready(r"serving on", timeout=60)
        yield [addr for addr, _ in replicas]
    finally:
        for _, proc in replicas:
            proc.stop(timeout=30)


async def test_rotating_in_a_new_key_keeps_tokens_in_flight_until_the_old_key_is_removed(
    edge, suite, tenant
) -> None:
    templates = LISTERS[0]
    request = await templates.seed(edge, tenant)
    in_flight = await _first_token(edge, templates, tenant, request)
    new_key = generate_token_keys("next")
    with _template_replicas(suite, [f"{new_key},{TOKEN_KEYS}", new_key]) as (rotated_addr, retired_addr):
        async with (
            grpc.aio.insecure_channel(rotated_addr) as rotated,
            grpc.aio.insecure_channel(retired_addr) as retired,
        ):
            # New key first, old key second: the old token still opens, new tokens use the new key.
            ids, fresh = await templates.call(
                rotated, tenant.metadata, _with(request, page_size=1, page_token=in_flight)
            )
            assert ids and fresh.startswith("next.")
            # Old key removed: its tokens are refused like any other bad token; new ones still open.
            await _assert_refused(retired, templates, tenant.metadata, request, in_flight)
            assert (await templates.call(retired, tenant.metadata, _with(request, page_token=fresh)))[0]
            # The suite's own replicas hold only the old key, so a new-key token is refused there.
            await _assert_refused(edge, templates, tenant.metadata, request, fresh)
