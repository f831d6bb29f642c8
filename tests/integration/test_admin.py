"""AdminService through the public address: tenants, keys with scopes, revocation, and who may call it."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from postwire.v1 import (
    admin_service_pb2,
    admin_service_pb2_grpc,
    event_service_pb2,
    event_service_pb2_grpc,
    mail_service_pb2_grpc,
    template_service_pb2,
    template_service_pb2_grpc,
)

from libs.testing.polling import poll_until
from tests.conftest import ADMIN_TOKEN
from tests.integration.helpers import bad_request_fields, mail

ADMIN = (("authorization", f"Bearer {ADMIN_TOKEN}"),)


def _auth(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


@pytest.fixture
def admin(edge: grpc.aio.Channel) -> admin_service_pb2_grpc.AdminServiceStub:
    return admin_service_pb2_grpc.AdminServiceStub(edge)


async def _tenant_with_key(admin, scopes: list[str], **tenant: object) -> tuple[str, str]:
    created = await admin.CreateTenant(
        admin_service_pb2.CreateTenantRequest(tenant={"name": "team", **tenant}), metadata=ADMIN
    )
    key = await admin.CreateApiKey(
        admin_service_pb2.CreateApiKeyRequest(tenant_id=created.tenant.id, scopes=scopes), metadata=ADMIN
    )
    return created.tenant.id, key.secret


async def test_a_platform_team_creates_a_tenant_and_a_key_that_sends(admin, edge, smtp_sink) -> None:
    created = await admin.CreateTenant(
        admin_service_pb2.CreateTenantRequest(
            tenant={"name": "billing", "limits": [{"stream": "transactional", "recipients_per_second": 50}]}
        ),
        metadata=ADMIN,
    )
    tenant = created.tenant
    assert tenant.id and tenant.name == "billing" and not tenant.sandbox
    assert [(lim.stream, lim.recipients_per_second) for lim in tenant.limits] == [("transactional", 50.0)]

    key = await admin.CreateApiKey(
        admin_service_pb2.CreateApiKeyRequest(
            tenant_id=tenant.id, scopes=["send", "messages:read"], display_name="billing prod"
        ),
        metadata=ADMIN,
    )
    assert key.secret.startswith(key.api_key.prefix + "_") and len(key.secret) > 40
    assert list(key.api_key.scopes) == ["send", "messages:read"]

    sent = await mail_service_pb2_grpc.MailServiceStub(edge).SendEmail(mail(), metadata=_auth(key.secret))
    assert sent.message_id

    listed = await admin.ListApiKeys(
        admin_service_pb2.ListApiKeysRequest(tenant_id=tenant.id), metadata=ADMIN
    )
    assert [k.prefix for k in listed.api_keys] == [key.api_key.prefix]
    # Shown once: nothing the API answers later contains the secret.
    secret_part = key.secret.split("_", 2)[2]
    assert secret_part.encode() not in listed.SerializeToString()
    got = await admin.GetTenant(admin_service_pb2.GetTenantRequest(tenant_id=tenant.id), metadata=ADMIN)
    assert secret_part.encode() not in got.SerializeToString()
    assert got.tenant == tenant


async def test_update_tenant_changes_only_masked_fields(admin) -> None:
    created = await admin.CreateTenant(
        admin_service_pb2.CreateTenantRequest(tenant={"name": "a", "sandbox": True}), metadata=ADMIN
    )
    updated = await admin.UpdateTenant(
        admin_service_pb2.UpdateTenantRequest(
            tenant={
                "id": created.tenant.id,
                "name": "b",
                "limits": [{"stream": "*", "recipients_per_day": 100}],
            },
            update_mask={"paths": ["limits"]},
        ),
        metadata=ADMIN,
    )
    assert updated.tenant.name == "a" and updated.tenant.sandbox
    assert [(lim.stream, lim.recipients_per_day) for lim in updated.tenant.limits] == [("*", 100)]

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await admin.UpdateTenant(
            admin_service_pb2.UpdateTenantRequest(
                tenant={"id": created.tenant.id, "limits": [{"stream": "Bad Stream", "burst": -1}]},
                update_mask={"paths": ["limits"]},
            ),
            metadata=ADMIN,
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request_fields(caught.value) == ["tenant.limits[0].stream", "tenant.limits[0].burst"]

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await admin.GetTenant(
            admin_service_pb2.GetTenantRequest(tenant_id="00000000-0000-0000-0000-000000000000"),
            metadata=ADMIN,
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_list_tenants_pages_through_all(admin) -> None:
    ids = {}
    for i in range(3):
        made = await admin.CreateTenant(
            admin_service_pb2.CreateTenantRequest(
                tenant={"name": f"page-{i}", "limits": [{"stream": "*", "recipients_per_day": i + 1}]}
            ),
            metadata=ADMIN,
        )
        ids[made.tenant.id] = made.tenant
    seen: list[str] = []
    listed: dict[str, admin_service_pb2.Tenant] = {}
    token = ""
    while True:
        page = await admin.ListTenants(
            admin_service_pb2.ListTenantsRequest(page_size=2, page_token=token), metadata=ADMIN
        )
        assert len(page.tenants) <= 2
        seen += [t.id for t in page.tenants]
        listed.update({t.id: t for t in page.tenants})
        token = page.next_page_token
        if not token:
            break
    assert set(ids) <= set(seen) and len(seen) == len(set(seen))
    # Listed exactly as created, limits included.
    assert all(listed[i] == tenant for i, tenant in ids.items())


async def test_only_the_admin_credential_opens_the_admin_api(admin, tenant) -> None:
    request = admin_service_pb2.ListTenantsRequest()
    for metadata, code in (
        ((), grpc.StatusCode.UNAUTHENTICATED),
        (_auth("pwadmin_wrong"), grpc.StatusCode.UNAUTHENTICATED),
        (tenant.metadata, grpc.StatusCode.PERMISSION_DENIED),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await admin.ListTenants(request, metadata=metadata)
        assert caught.value.code() == code
        assert ADMIN_TOKEN not in (caught.value.details() or "")


async def test_scopes_are_checked_on_every_public_service(admin, edge) -> None:
    _, reader = await _tenant_with_key(admin, ["templates:read"])
    templates = template_service_pb2_grpc.TemplateServiceStub(edge)
    # Allowed: reading templates (the answer is about the template, not the key).
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await templates.GetTemplate(
            template_service_pb2.GetTemplateRequest(template="nope"), metadata=_auth(reader)
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    calls = [
        templates.CreateTemplate(
            template_service_pb2.CreateTemplateRequest(
                template={"name": "x", "subject": "s", "text_body": "t"}
            ),
            metadata=_auth(reader),
        ),
        mail_service_pb2_grpc.MailServiceStub(edge).SendEmail(mail(), metadata=_auth(reader)),
        event_service_pb2_grpc.EventServiceStub(edge).ListEvents(
            event_service_pb2.ListEventsRequest(), metadata=_auth(reader)
        ),
    ]
    for call, scope in zip(calls, ("templates:write", "send", "events:read"), strict=True):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert f"'{scope}'" in (caught.value.details() or "")


async def test_unknown_scopes_and_missing_tenant_are_refused(admin) -> None:
    created = await admin.CreateTenant(
        admin_service_pb2.CreateTenantRequest(tenant={"name": "s"}), metadata=ADMIN
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await admin.CreateApiKey(
            admin_service_pb2.CreateApiKeyRequest(tenant_id=created.tenant.id, scopes=["send", "root"]),
            metadata=ADMIN,
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request_fields(caught.value) == ["scopes[1]"]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await admin.CreateApiKey(
            admin_service_pb2.CreateApiKeyRequest(tenant_id=created.tenant.id), metadata=ADMIN
        )
    assert bad_request_fields(caught.value) == ["scopes"]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await admin.CreateApiKey(
            admin_service_pb2.CreateApiKeyRequest(
                tenant_id="0b7c3c9e-0000-4000-8000-000000000000", scopes=["send"]
            ),
            metadata=ADMIN,
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_revoked_key_stops_working_within_seconds_everywhere(admin, edge) -> None:
    tenant_id, secret = await _tenant_with_key(admin, ["send", "templates:read"])
    mail_stub = mail_service_pb2_grpc.MailServiceStub(edge)
    templates = template_service_pb2_grpc.TemplateServiceStub(edge)
    listing = template_service_pb2.ListTemplatesRequest()
    # Warm every cache on the way: admission (policy) and the template service's resolver.
    await mail_stub.SendEmail(mail(), metadata=_auth(secret))
    await templates.ListTemplates(listing, metadata=_auth(secret))
    prefix = "_".join(secret.split("_")[:2])
    revoked = await admin.RevokeApiKey(admin_service_pb2.RevokeApiKeyRequest(api_key=prefix), metadata=ADMIN)
    assert revoked.api_key.HasField("revoke_time")

    started = time.monotonic()
    while True:
        results = await asyncio.gather(
            mail_stub.SendEmail(mail(), metadata=_auth(secret)),
            templates.ListTemplates(listing, metadata=_auth(secret)),
            return_exceptions=True,
        )
        codes = [r.code() if isinstance(r, grpc.aio.AioRpcError) else None for r in results]
        if codes == [grpc.StatusCode.UNAUTHENTICATED] * 2:
            break
        # POSTWIRE_KEY_CACHE_SECONDS is 1 in tests: two caches on the way, so about 2 s, plus the
        # loop's own calls on a busy machine ("within seconds", not forever).
        assert time.monotonic() - started < 10, codes
        await asyncio.sleep(0.2)

    listed = await admin.ListApiKeys(
        admin_service_pb2.ListApiKeysRequest(tenant_id=tenant_id, show_revoked=True), metadata=ADMIN
    )
    assert [k.HasField("revoke_time") for k in listed.api_keys] == [True]
    active = await admin.ListApiKeys(
        admin_service_pb2.ListApiKeysRequest(tenant_id=tenant_id), metadata=ADMIN
    )
    assert list(active.api_keys) == []
    # The whole key is not an accepted way to name it.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await admin.RevokeApiKey(admin_service_pb2.RevokeApiKeyRequest(api_key=secret), metadata=ADMIN)
    assert bad_request_fields(caught.value) == ["api_key"]


async def test_keys_and_the_admin_credential_never_reach_the_logs(suite, admin, edge, otlp) -> None:
    _, secret = await _tenant_with_key(admin, ["send"])
    stub = mail_service_pb2_grpc.MailServiceStub(edge)
    await stub.SendEmail(mail(), metadata=_auth(secret))
    # Failure paths too: a revoked key, a wrong admin token, a tenant key on the admin API.
    with pytest.raises(grpc.aio.AioRpcError):
        await admin.ListTenants(admin_service_pb2.ListTenantsRequest(), metadata=_auth(secret))
    with pytest.raises(grpc.aio.AioRpcError):
        await admin.ListTenants(admin_service_pb2.ListTenantsRequest(), metadata=_auth(secret + "x"))
    await admin.RevokeApiKey(
        admin_service_pb2.RevokeApiKeyRequest(api_key="_".join(secret.split("_")[:2])), metadata=ADMIN
    )
    await asyncio.sleep(1.5)
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.SendEmail(mail(), metadata=_auth(secret))
    secret_part = secret.split("_", 2)[2]
    prefix = "_".join(secret.split("_")[:2])
    for log in (suite.data_dir / "logs").glob("*.log"):
        text = log.read_text(errors="replace")
        assert secret_part not in text, log.name
        assert ADMIN_TOKEN not in text, log.name
    # The prefix is what names the key: in the policy log for its creation and revocation...
    policy_log = (suite.data_dir / "logs" / "policy.log").read_text()
    assert f"API key {prefix} created" in policy_log and f"API key {prefix} of tenant" in policy_log

    # ...and on the spans of the calls it made, where the secret never appears.
    async def tagged() -> list[object]:
        return [
            s
            for s in otlp.spans()
            if s.attributes.get("postwire.api_key.prefix") == prefix and s.service == "postwire-submission"
        ]

    await poll_until(tagged, timeout=10, what="a submission span tagged with the key prefix")
    assert not [s for s in otlp.spans() if any(secret_part in v for v in s.attributes.values())]
