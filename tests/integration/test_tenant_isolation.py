"""Tenant isolation: a second tenant walks every public RPC with the first tenant's ids and names.

For each, the answer must be what a nonexistent id gets (same code, same message once the id
itself is taken out), so nothing can be read, changed, sent with, or even learned to exist.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable

import grpc
import pytest
from google.protobuf import timestamp_pb2
from postwire.v1 import (
    admin_service_pb2,
    admin_service_pb2_grpc,
    domain_service_pb2,
    domain_service_pb2_grpc,
    event_service_pb2,
    event_service_pb2_grpc,
    mail_service_pb2,
    mail_service_pb2_grpc,
    suppression_service_pb2,
    suppression_service_pb2_grpc,
    template_service_pb2,
    template_service_pb2_grpc,
)

from tests.conftest import create_tenant
from tests.integration.helpers import mail, unique, wait_for_events

Call = Callable[[str], Awaitable[object]]


async def _failure(call: Awaitable[object]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value.code(), caught.value.details() or ""


async def test_a_second_tenant_cannot_reach_anything_of_the_first(suite, edge, tenant) -> None:
    other = await create_tenant(suite)
    mail_stub = mail_service_pb2_grpc.MailServiceStub(edge)
    templates = template_service_pb2_grpc.TemplateServiceStub(edge)
    events = event_service_pb2_grpc.EventServiceStub(edge)
    suppressions = suppression_service_pb2_grpc.SuppressionServiceStub(edge)

    # The first tenant's things: a template, a message sent with it, a suppression.
    template = (
        await templates.CreateTemplate(
            template_service_pb2.CreateTemplateRequest(
                template={"name": f"secret-{uuid.uuid4().hex[:6]}", "subject": "s", "text_body": "t"}
            ),
            metadata=tenant.metadata,
        )
    ).template
    sent = await mail_stub.SendEmail(
        mail(subject="", text_body="", template={"id": template.id}, idempotency_key="shared-key"),
        metadata=tenant.metadata,
    )
    hidden = unique("hidden")
    await suppressions.BatchCreateSuppressions(
        suppression_service_pb2.BatchCreateSuppressionsRequest(
            suppressions=[{"address": hidden, "reason": suppression_service_pb2.SUPPRESSION_REASON_MANUAL}]
        ),
        metadata=tenant.metadata,
    )
    await wait_for_events(edge, tenant.metadata, sent.message_id, [1])

    nonexistent_id = str(uuid.uuid4())
    nonexistent_name = f"nothing-{uuid.uuid4().hex[:6]}"
    by_id: dict[str, Call] = {
        "MailService.GetMessage": lambda i: mail_stub.GetMessage(
            mail_service_pb2.GetMessageRequest(message_id=i), metadata=other.metadata
        ),
        "MailService.SendEmail(template)": lambda i: mail_stub.SendEmail(
            mail(subject="", text_body="", template={"id": i}), metadata=other.metadata
        ),
        "TemplateService.GetTemplate": lambda i: templates.GetTemplate(
            template_service_pb2.GetTemplateRequest(template=i), metadata=other.metadata
        ),
        "TemplateService.RenderTemplate": lambda i: templates.RenderTemplate(
            template_service_pb2.RenderTemplateRequest(template=i), metadata=other.metadata
        ),
        "TemplateService.UpdateTemplate": lambda i: templates.UpdateTemplate(
            template_service_pb2.UpdateTemplateRequest(
                template={"id": i, "subject": "pwned"}, update_mask={"paths": ["subject"]}
            ),
            metadata=other.metadata,
        ),
        "TemplateService.DeleteTemplate": lambda i: templates.DeleteTemplate(
            template_service_pb2.DeleteTemplateRequest(template=i), metadata=other.metadata
        ),
    }
    targets = {
        "MailService.GetMessage": (sent.message_id, nonexistent_id),
        "MailService.SendEmail(template)": (template.id, nonexistent_id),
        "TemplateService.GetTemplate": (template.id, nonexistent_id),
        "TemplateService.RenderTemplate": (template.name, nonexistent_name),
        "TemplateService.UpdateTemplate": (template.id, nonexistent_id),
        "TemplateService.DeleteTemplate": (template.name, nonexistent_name),
    }
    for rpc, call in by_id.items():
        theirs, missing = targets[rpc]
        code, text = await _failure(call(theirs))
        code_missing, text_missing = await _failure(call(missing))
        assert code == code_missing == grpc.StatusCode.NOT_FOUND, rpc
        assert text.replace(theirs, "<id>") == text_missing.replace(missing, "<id>"), rpc

    for address in (hidden, unique("never")):
        code, _ = await _failure(
            suppressions.GetSuppression(
                suppression_service_pb2.GetSuppressionRequest(address=address), metadata=other.metadata
            )
        )
        assert code == grpc.StatusCode.NOT_FOUND
        code, _ = await _failure(
            suppressions.DeleteSuppression(
                suppression_service_pb2.DeleteSuppressionRequest(address=address), metadata=other.metadata
            )
        )
        assert code == grpc.StatusCode.NOT_FOUND

    domains = domain_service_pb2_grpc.DomainServiceStub(edge)
    domain = f"iso-{uuid.uuid4().hex[:8]}.example.org"
    await domains.CreateDomain(domain_service_pb2.CreateDomainRequest(name=domain), metadata=tenant.metadata)
    absent = f"none-{uuid.uuid4().hex[:8]}.example.org"
    for rpc in (
        lambda n: domains.GetDomain(domain_service_pb2.GetDomainRequest(name=n), metadata=other.metadata),
        lambda n: domains.VerifyDomain(
            domain_service_pb2.VerifyDomainRequest(name=n), metadata=other.metadata
        ),
        lambda n: domains.DeleteDomain(
            domain_service_pb2.DeleteDomainRequest(name=n), metadata=other.metadata
        ),
    ):
        code, text = await _failure(rpc(domain))
        code_missing, text_missing = await _failure(rpc(absent))
        assert code == code_missing == grpc.StatusCode.NOT_FOUND
        assert text.replace(domain, "<name>") == text_missing.replace(absent, "<name>")
    theirs = await domains.ListDomains(domain_service_pb2.ListDomainsRequest(), metadata=other.metadata)
    assert domain not in [d.name for d in theirs.domains]
    still_mine = await domains.GetDomain(
        domain_service_pb2.GetDomainRequest(name=domain), metadata=tenant.metadata
    )
    assert still_mine.domain.name == domain

    # Lists show none of it.
    listed = await templates.ListTemplates(
        template_service_pb2.ListTemplatesRequest(), metadata=other.metadata
    )
    assert template.id not in [t.id for t in listed.templates]
    their_events = await events.ListEvents(
        event_service_pb2.ListEventsRequest(message_id=sent.message_id), metadata=other.metadata
    )
    assert list(their_events.events) == []
    all_events = await events.ListEvents(
        event_service_pb2.ListEventsRequest(page_size=1000), metadata=other.metadata
    )
    assert sent.message_id not in {e.message_id for e in all_events.events}
    sup = await suppressions.ListSuppressions(
        suppression_service_pb2.ListSuppressionsRequest(), metadata=other.metadata
    )
    assert hidden not in [s.address for s in sup.suppressions]

    # Names, idempotency keys and suppressions are per tenant: the same ones work independently.
    mine = await templates.CreateTemplate(
        template_service_pb2.CreateTemplateRequest(
            template={"name": template.name, "subject": "s", "text_body": "x"}
        ),
        metadata=other.metadata,
    )
    assert mine.template.id != template.id
    again = await mail_stub.SendEmail(mail(idempotency_key="shared-key"), metadata=other.metadata)
    assert again.message_id != sent.message_id
    free = await mail_stub.SendEmail(mail(to=[{"address": hidden}]), metadata=other.metadata)
    assert free.recipients[0].state == 1  # ACCEPTED, not SUPPRESSED

    # The first tenant's template is untouched by all of the above.
    still = await templates.GetTemplate(
        template_service_pb2.GetTemplateRequest(template=template.id), metadata=tenant.metadata
    )
    assert (still.template.version, still.template.subject) == (1, "s")

    # A live tail sees only its own tenant's events. It replays from just before the sends, so
    # it sees every event since then however late it subscribes (a leak included).
    since = timestamp_pb2.Timestamp()
    since.FromSeconds(int(time.time()) - 1)
    stream = events.StreamEvents(event_service_pb2.StreamEventsRequest(start_time=since), metadata=other.metadata)
    leak = await mail_stub.SendEmail(mail(), metadata=tenant.metadata)
    own = await mail_stub.SendEmail(mail(), metadata=other.metadata)
    seen: list[str] = []

    async def read() -> None:
        async for item in stream:
            seen.append(item.event.message_id)
            if item.event.message_id == own.message_id:
                return

    await asyncio.wait_for(read(), timeout=30)
    stream.cancel()
    assert leak.message_id not in seen

    # And a tenant key is no key to the admin API.
    code, _ = await _failure(
        admin_service_pb2_grpc.AdminServiceStub(edge).GetTenant(
            admin_service_pb2.GetTenantRequest(tenant_id=tenant.id), metadata=other.metadata
        )
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED
