"""Create a template, send with it, and see the rendered parts arrive with the right escaping."""

from __future__ import annotations

import email
import email.policy
import uuid

import asyncpg
import grpc
import pytest
from google.protobuf import struct_pb2
from postwire.v1 import (
    event_pb2,
    mail_service_pb2,
    mail_service_pb2_grpc,
    template_service_pb2,
    template_service_pb2_grpc,
)

from tests.integration.helpers import bad_request_fields, mail, unique, wait_for_events, wait_for_mail


def _vars(**values: object) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(values)
    return s


async def _create(edge, tenant, **fields) -> template_service_pb2.Template:
    stub = template_service_pb2_grpc.TemplateServiceStub(edge)
    template = {
        "name": f"welcome-{uuid.uuid4().hex[:8]}",
        "subject": "Welcome, {{ name }}",
        "html_body": "<p>Hi {{ name }}, you have {{ count }} items</p>",
        "text_body": "Hi {{ name }}, you have {{ count }} items",
        **fields,
    }
    answer = await stub.CreateTemplate(
        template_service_pb2.CreateTemplateRequest(template=template), metadata=tenant.metadata
    )
    return answer.template


async def test_send_by_template_renders_each_part_with_its_escaping(edge, tenant, smtp_sink) -> None:
    created = await _create(edge, tenant)
    assert created.version == 1 and created.id
    rcpt = unique()
    stub = mail_service_pb2_grpc.MailServiceStub(edge)
    await stub.SendEmail(
        mail(
            to=[{"address": rcpt}],
            subject="",
            text_body="",
            template={"name": created.name, "variables": _vars(name="<Ada>", count=3)},
        ),
        metadata=tenant.metadata,
    )
    (received,) = await wait_for_mail(smtp_sink, rcpt)
    parsed = email.message_from_bytes(received.data, policy=email.policy.default)
    assert parsed["Subject"] == "Welcome, <Ada>"
    assert "<p>Hi &lt;Ada&gt;, you have 3 items</p>" in parsed.get_body(("html",)).get_content()
    assert "Hi <Ada>, you have 3 items" in parsed.get_body(("plain",)).get_content()


async def test_send_whose_variables_do_not_fit_is_refused_before_anything_is_queued(
    suite, edge, tenant, smtp_sink
) -> None:
    created = await _create(edge, tenant)
    rcpt = unique()
    stub = mail_service_pb2_grpc.MailServiceStub(edge)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.SendEmail(
            mail(
                to=[{"address": rcpt}],
                subject="",
                text_body="",
                template={"id": created.id, "variables": _vars()},
            ),
            metadata=tenant.metadata,
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request_fields(caught.value) == ["template.variables"]
    assert "name" in (caught.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.SendEmail(
            mail(to=[{"address": rcpt}], subject="", text_body="", template={"name": "no-such-template"}),
            metadata=tenant.metadata,
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    conn = await asyncpg.connect(suite.database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM recipients WHERE address = $1", rcpt) == 0
    finally:
        await conn.close()


async def test_a_templated_send_is_rendered_once_at_acceptance_and_delivered_as_rendered(
    suite, edge, tenant, smtp_sink
) -> None:
    """The router builds from the parts rendered at acceptance instead of rendering again: the
    template deleted (and so unrenderable) between acceptance and routing changes nothing."""
    created = await _create(edge, tenant)
    rcpt = unique()
    assert suite.processes["router"].stop(timeout=20) == 0
    try:
        await mail_service_pb2_grpc.MailServiceStub(edge).SendEmail(
            mail(
                to=[{"address": rcpt}],
                subject="",
                text_body="",
                template={"name": created.name, "variables": _vars(name="<Ada>", count=2)},
            ),
            metadata=tenant.metadata,
        )
        await template_service_pb2_grpc.TemplateServiceStub(edge).DeleteTemplate(
            template_service_pb2.DeleteTemplateRequest(template=created.id), metadata=tenant.metadata
        )
    finally:
        suite.start_service("router")
    (received,) = await wait_for_mail(smtp_sink, rcpt)
    parsed = email.message_from_bytes(received.data, policy=email.policy.default)
    assert parsed["Subject"] == "Welcome, <Ada>"
    assert "<p>Hi &lt;Ada&gt;, you have 2 items</p>" in parsed.get_body(("html",)).get_content()


async def test_a_message_accepted_without_stored_parts_is_rendered_by_the_router(
    suite, edge, tenant, smtp_sink
) -> None:
    """Rows accepted before rendered parts were stored still route: the router renders them, and
    a template deleted meanwhile fails the message with an event."""
    created = await _create(edge, tenant)
    kept, gone = unique(), unique()
    stub = mail_service_pb2_grpc.MailServiceStub(edge)
    assert suite.processes["router"].stop(timeout=20) == 0
    try:
        sent = [
            await stub.SendEmail(
                mail(
                    to=[{"address": rcpt}],
                    subject="",
                    text_body="",
                    template={"name": name, "variables": _vars(name="Bo", count=1)},
                ),
                metadata=tenant.metadata,
            )
            for rcpt, name in ((kept, created.name), (gone, (await _create(edge, tenant)).name))
        ]
        conn = await asyncpg.connect(suite.database_url)
        try:
            # As a row written before migration 0023 looks.
            await conn.execute(
                "UPDATE messages SET rendered_parts = NULL WHERE id = ANY($1::uuid[])", [s.message_id for s in sent]
            )
            deleted = await conn.fetchval(
                "SELECT request FROM messages WHERE id = $1::uuid", sent[1].message_id
            )
        finally:
            await conn.close()
        doomed = mail_service_pb2.SendEmailRequest.FromString(deleted).template.id
        await template_service_pb2_grpc.TemplateServiceStub(edge).DeleteTemplate(
            template_service_pb2.DeleteTemplateRequest(template=doomed), metadata=tenant.metadata
        )
    finally:
        suite.start_service("router")
    (received,) = await wait_for_mail(smtp_sink, kept)
    parsed = email.message_from_bytes(received.data, policy=email.policy.default)
    assert parsed["Subject"] == "Welcome, Bo"
    events = await wait_for_events(edge, tenant.metadata, sent[1].message_id, [event_pb2.EVENT_TYPE_FAILED])
    (failed,) = [e for e in events if e.type == event_pb2.EVENT_TYPE_FAILED]
    assert "not found" in failed.reason
    assert not [m for m in smtp_sink.messages() if gone in m.rcpt_tos]


async def test_render_preview_and_errors(edge, tenant) -> None:
    created = await _create(edge, tenant)
    stub = template_service_pb2_grpc.TemplateServiceStub(edge)
    preview = await stub.RenderTemplate(
        template_service_pb2.RenderTemplateRequest(
            template=created.name, variables=_vars(name="Bo", count=1)
        ),
        metadata=tenant.metadata,
    )
    assert (preview.subject, preview.text_body, preview.version) == (
        "Welcome, Bo",
        "Hi Bo, you have 1 items",
        1,
    )

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.RenderTemplate(
            template_service_pb2.RenderTemplateRequest(template=created.name, variables=_vars(count=1)),
            metadata=tenant.metadata,
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request_fields(caught.value) == ["template.variables"]
    assert "name" in (caught.value.details() or "")

    evil = await _create(edge, tenant, html_body="<p>{{ ''.__class__.__mro__[1].__subclasses__() }}</p>")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.RenderTemplate(
            template_service_pb2.RenderTemplateRequest(template=evil.id, variables=_vars(name="a", count=1)),
            metadata=tenant.metadata,
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "subclasses" not in (caught.value.details() or "").replace("__subclasses__", "")


async def test_create_rejects_syntax_errors_with_the_line_and_duplicate_names(edge, tenant) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _create(edge, tenant, text_body="line one\n{% if %}")
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request_fields(caught.value) == ["template.text_body"]
    assert "line 2" in (caught.value.details() or "")

    created = await _create(edge, tenant)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _create(edge, tenant, name=created.name)
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_sandbox_refuses_python_internals(edge, tenant) -> None:
    created = await _create(edge, tenant, html_body="<p>{{ cycler.__init__.__globals__ }}</p>")
    stub = template_service_pb2_grpc.TemplateServiceStub(edge)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.RenderTemplate(
            template_service_pb2.RenderTemplateRequest(
                template=created.id, variables=_vars(name="a", count=1)
            ),
            metadata=tenant.metadata,
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "globals" not in (caught.value.details() or "").replace("__globals__", "")


async def test_templates_are_invisible_to_other_tenants(suite, edge, tenant) -> None:
    from tests.conftest import create_tenant

    created = await _create(edge, tenant)
    other = await create_tenant(suite)
    stub = template_service_pb2_grpc.TemplateServiceStub(edge)
    for ref in (created.id, created.name):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetTemplate(
                template_service_pb2.GetTemplateRequest(template=ref), metadata=other.metadata
            )
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_update_makes_immutable_versions_and_old_ones_stay_sendable(edge, tenant, smtp_sink) -> None:
    from google.protobuf import field_mask_pb2

    created = await _create(edge, tenant)
    stub = template_service_pb2_grpc.TemplateServiceStub(edge)
    updated = await stub.UpdateTemplate(
        template_service_pb2.UpdateTemplateRequest(
            template={"id": created.id, "subject": "Version two for {{ name }}"},
            update_mask=field_mask_pb2.FieldMask(paths=["subject"]),
        ),
        metadata=tenant.metadata,
    )
    assert updated.template.version == 2 and updated.template.text_body == created.text_body
    latest = await stub.GetTemplate(
        template_service_pb2.GetTemplateRequest(template=created.name), metadata=tenant.metadata
    )
    first = await stub.GetTemplate(
        template_service_pb2.GetTemplateRequest(template=created.name, version=1), metadata=tenant.metadata
    )
    assert (latest.template.version, latest.template.subject) == (2, "Version two for {{ name }}")
    assert (first.template.version, first.template.subject) == (1, "Welcome, {{ name }}")

    pinned, current = unique(), unique()
    mail_stub = mail_service_pb2_grpc.MailServiceStub(edge)
    for rcpt, version in ((pinned, 1), (current, 0)):
        await mail_stub.SendEmail(
            mail(
                to=[{"address": rcpt}],
                subject="",
                text_body="",
                template={"id": created.id, "version": version, "variables": _vars(name="Ann", count=1)},
            ),
            metadata=tenant.metadata,
        )
    (old,) = await wait_for_mail(smtp_sink, pinned)
    (new,) = await wait_for_mail(smtp_sink, current)
    assert old.header("Subject") == "Welcome, Ann"
    assert new.header("Subject") == "Version two for Ann"

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.UpdateTemplate(
            template_service_pb2.UpdateTemplateRequest(
                template={"id": created.id, "text_body": "{% for %}"},
                update_mask=field_mask_pb2.FieldMask(paths=["text_body"]),
            ),
            metadata=tenant.metadata,
        )
    assert bad_request_fields(caught.value) == ["template.text_body"]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.UpdateTemplate(
            template_service_pb2.UpdateTemplateRequest(
                template={"id": created.id}, update_mask=field_mask_pb2.FieldMask(paths=["name"])
            ),
            metadata=tenant.metadata,
        )
    assert bad_request_fields(caught.value) == ["update_mask"]


async def test_list_pages_by_name_with_a_prefix_and_delete_is_soft(suite, edge, tenant, smtp_sink) -> None:
    from tests.conftest import create_tenant

    prefix = f"p{uuid.uuid4().hex[:6]}-"
    names = [f"{prefix}{i}" for i in range(5)]
    for name in names:
        await _create(edge, tenant, name=name)
    stub = template_service_pb2_grpc.TemplateServiceStub(edge)
    seen, token = [], ""
    while True:
        page = await stub.ListTemplates(
            template_service_pb2.ListTemplatesRequest(page_size=2, page_token=token, name_prefix=prefix),
            metadata=tenant.metadata,
        )
        seen.append([t.name for t in page.templates])
        token = page.next_page_token
        if not token:
            break
    assert seen == [names[0:2], names[2:4], names[4:5]]
    other = await create_tenant(suite)
    empty = await stub.ListTemplates(
        template_service_pb2.ListTemplatesRequest(name_prefix=prefix), metadata=other.metadata
    )
    assert list(empty.templates) == []

    await stub.DeleteTemplate(
        template_service_pb2.DeleteTemplateRequest(template=names[0]), metadata=tenant.metadata
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetTemplate(
            template_service_pb2.GetTemplateRequest(template=names[0]), metadata=tenant.metadata
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.DeleteTemplate(
            template_service_pb2.DeleteTemplateRequest(template=names[0]), metadata=other.metadata
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    remaining = await stub.ListTemplates(
        template_service_pb2.ListTemplatesRequest(name_prefix=prefix), metadata=tenant.metadata
    )
    assert [t.name for t in remaining.templates] == names[1:]

    # A send naming the deleted template is NOT_FOUND; the name can be taken again.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await mail_service_pb2_grpc.MailServiceStub(edge).SendEmail(
            mail(
                subject="", text_body="", template={"name": names[0], "variables": _vars(name="a", count=1)}
            ),
            metadata=tenant.metadata,
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    reborn = await _create(edge, tenant, name=names[0])
    assert reborn.version == 1


async def test_html_only_template_arrives_inlined_with_a_generated_text_part(edge, tenant, smtp_sink) -> None:
    created = await _create(
        edge,
        tenant,
        html_body="<html><head><style>p { color: #c00 }</style></head><body><p>Hi {{ name }}, "
        "<a href='https://example.com/reset?u={{ count }}'>reset your password</a></p></body></html>",
        text_body="",
    )
    rcpt = unique()
    await mail_service_pb2_grpc.MailServiceStub(edge).SendEmail(
        mail(
            to=[{"address": rcpt}],
            subject="",
            text_body="",
            template={"id": created.id, "variables": _vars(name="Ann", count=7)},
        ),
        metadata=tenant.metadata,
    )
    (received,) = await wait_for_mail(smtp_sink, rcpt)
    parsed = email.message_from_bytes(received.data, policy=email.policy.default)
    assert '<p style="color: #c00;">Hi Ann' in parsed.get_body(("html",)).get_content()
    text = parsed.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert text.strip() == "Hi Ann, reset your password [https://example.com/reset?u=7]"


async def test_variables_schema_refuses_bad_sends_naming_the_variable(edge, tenant) -> None:
    schema = struct_pb2.Struct()
    schema.update(
        {
            "type": "object",
            "required": ["name", "count"],
            "properties": {"name": {"type": "string"}, "count": {"type": "integer", "minimum": 1}},
        }
    )
    created = await _create(edge, tenant, variables_schema=schema)
    assert created.variables_schema == schema
    stub = mail_service_pb2_grpc.MailServiceStub(edge)
    for variables, field in (
        (_vars(count=2), "template.variables.name"),
        (_vars(name="Ann", count=0), "template.variables.count"),
        (_vars(name="Ann", count="many"), "template.variables.count"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.SendEmail(
                mail(subject="", text_body="", template={"id": created.id, "variables": variables}),
                metadata=tenant.metadata,
            )
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert bad_request_fields(caught.value) == [field]
    ok = await stub.SendEmail(
        mail(subject="", text_body="", template={"id": created.id, "variables": _vars(name="Ann", count=2)}),
        metadata=tenant.metadata,
    )
    assert ok.message_id

    bad_schema = struct_pb2.Struct()
    bad_schema.update({"type": "no-such-type"})
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _create(edge, tenant, variables_schema=bad_schema)
    assert bad_request_fields(caught.value) == ["template.variables_schema"]


async def test_drafts_preview_without_affecting_sends_until_published(edge, tenant, smtp_sink) -> None:
    from google.protobuf import field_mask_pb2

    created = await _create(edge, tenant)
    stub = template_service_pb2_grpc.TemplateServiceStub(edge)
    mail_stub = mail_service_pb2_grpc.MailServiceStub(edge)

    def update(subject: str, *, draft: bool) -> template_service_pb2.UpdateTemplateRequest:
        return template_service_pb2.UpdateTemplateRequest(
            template={"id": created.id, "subject": subject, "draft": draft},
            update_mask=field_mask_pb2.FieldMask(paths=["subject"]),
        )

    async def send_subject(**ref: object) -> str:
        rcpt = unique()
        await mail_stub.SendEmail(
            mail(
                to=[{"address": rcpt}],
                subject="",
                text_body="",
                template={"id": created.id, "variables": _vars(name="Ann", count=1), **ref},
            ),
            metadata=tenant.metadata,
        )
        (received,) = await wait_for_mail(smtp_sink, rcpt)
        return str(received.header("Subject"))

    draft = (
        await stub.UpdateTemplate(update("Draft for {{ name }}", draft=True), metadata=tenant.metadata)
    ).template
    assert (draft.version, draft.draft) == (2, True)
    preview = await stub.RenderTemplate(
        template_service_pb2.RenderTemplateRequest(template=created.id, variables=_vars(name="Ann", count=1)),
        metadata=tenant.metadata,
    )
    assert (preview.subject, preview.version) == ("Draft for Ann", 2)
    assert await send_subject() == "Welcome, Ann"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await mail_stub.SendEmail(
            mail(
                subject="",
                text_body="",
                template={"id": created.id, "version": 2, "variables": _vars(name="A", count=1)},
            ),
            metadata=tenant.metadata,
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND

    published = (
        await stub.UpdateTemplate(update("Final for {{ name }}", draft=False), metadata=tenant.metadata)
    ).template
    assert (published.version, published.draft) == (3, False)
    assert await send_subject() == "Final for Ann"

    only_draft = await _create(edge, tenant, draft=True)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await mail_stub.SendEmail(
            mail(
                subject="",
                text_body="",
                template={"id": only_draft.id, "variables": _vars(name="A", count=1)},
            ),
            metadata=tenant.metadata,
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_locale_variants_fall_back_from_region_to_language_to_default(edge, tenant, smtp_sink) -> None:
    created = await _create(
        edge,
        tenant,
        locales={
            "fr": {"subject": "Bienvenue, {{ name }}", "text_body": "Salut {{ name }}"},
            "fr-CA": {"subject": "Bienvenue au Canada, {{ name }}", "text_body": "Allô {{ name }}"},
        },
    )
    assert set(created.locales) == {"fr", "fr-CA"}
    mail_stub = mail_service_pb2_grpc.MailServiceStub(edge)
    for locale, subject in (
        ("fr-CA", "Bienvenue au Canada, Ann"),
        ("fr-BE", "Bienvenue, Ann"),
        ("de", "Welcome, Ann"),
    ):
        rcpt = unique()
        await mail_stub.SendEmail(
            mail(
                to=[{"address": rcpt}],
                subject="",
                text_body="",
                template={"id": created.id, "locale": locale, "variables": _vars(name="Ann", count=1)},
            ),
            metadata=tenant.metadata,
        )
        (received,) = await wait_for_mail(smtp_sink, rcpt)
        assert received.header("Subject") == subject

    preview = await template_service_pb2_grpc.TemplateServiceStub(edge).RenderTemplate(
        template_service_pb2.RenderTemplateRequest(
            template=created.name, locale="FR", variables=_vars(name="Bo", count=1)
        ),
        metadata=tenant.metadata,
    )
    assert (preview.subject, preview.text_body, preview.locale) == ("Bienvenue, Bo", "Salut Bo", "fr")

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _create(edge, tenant, locales={"fr_CA": {"subject": "x", "text_body": "y"}})
    assert bad_request_fields(caught.value) == ['template.locales["fr_CA"]']
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _create(edge, tenant, locales={"fr": {"subject": "x", "text_body": "{% if %}"}})
    assert bad_request_fields(caught.value) == ['template.locales["fr"].text_body']
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await mail_stub.SendEmail(
            mail(subject="", text_body="", template={"id": created.id, "locale": "fr CA"}),
            metadata=tenant.metadata,
        )
    assert bad_request_fields(caught.value) == ["template.locale"]


async def test_mjml_template_is_compiled_to_responsive_html_after_jinja(edge, tenant, smtp_sink) -> None:
    created = await _create(
        edge,
        tenant,
        html_body="",
        text_body="",
        mjml_body=(
            "<mjml><mj-body>{% for item in items %}<mj-section><mj-column>"
            "<mj-text>{{ item }} for {{ name }}</mj-text></mj-column></mj-section>{% endfor %}"
            "<mj-section><mj-column><mj-button href='https://example.com/go'>Go</mj-button>"
            "</mj-column></mj-section></mj-body></mjml>"
        ),
    )
    rcpt = unique()
    variables = struct_pb2.Struct()
    variables.update({"name": "<Ann>", "items": ["tea", "cake"], "count": 1})
    await mail_service_pb2_grpc.MailServiceStub(edge).SendEmail(
        mail(
            to=[{"address": rcpt}],
            subject="",
            text_body="",
            template={"id": created.id, "variables": variables},
        ),
        metadata=tenant.metadata,
    )
    (received,) = await wait_for_mail(smtp_sink, rcpt)
    parsed = email.message_from_bytes(received.data, policy=email.policy.default)
    html = parsed.get_body(("html",)).get_content()
    assert "<mj-" not in html and "@media" in html
    assert "tea for &lt;Ann&gt;" in html and "cake for &lt;Ann&gt;" in html
    text = parsed.get_body(("plain",)).get_content()
    assert "tea for <Ann>" in text and "Go [https://example.com/go]" in text

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _create(edge, tenant, mjml_body="<mjml></mjml>")
    assert bad_request_fields(caught.value) == ["template.mjml_body"]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _create(edge, tenant, html_body="", mjml_body="<mjml>{% if %}</mjml>")
    assert bad_request_fields(caught.value) == ["template.mjml_body"]
    # MJML source is held to the same size limit as the other parts, on create as on update.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _create(edge, tenant, html_body="", mjml_body="<mjml>" + "x" * 600_000 + "</mjml>")
    assert bad_request_fields(caught.value) == ["template.mjml_body"]


async def test_a_template_that_spins_is_stopped_and_the_service_keeps_answering(edge, tenant) -> None:
    stub = template_service_pb2_grpc.TemplateServiceStub(edge)
    spin = await _create(
        edge,
        tenant,
        html_body="{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
        text_body="",
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.RenderTemplate(
            template_service_pb2.RenderTemplateRequest(template=spin.name, variables=_vars(name="a", count=1)),
            metadata=tenant.metadata,
            timeout=30,
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "rendering took longer than" in caught.value.details()
    ok = await _create(edge, tenant)
    answer = await stub.RenderTemplate(
        template_service_pb2.RenderTemplateRequest(template=ok.name, variables=_vars(name="Bo", count=2)),
        metadata=tenant.metadata,
        timeout=10,
    )
    assert answer.subject == "Welcome, Bo"


async def test_update_without_a_mask_changes_only_the_fields_it_sets(edge, tenant, smtp_sink) -> None:
    """AIP-134: an empty update_mask means the populated fields; the schema and the locale
    variants a request leaves out stay, so a send still gets both checked and localised."""
    schema = struct_pb2.Struct()
    schema.update({"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}})
    locales = {"fr": {"subject": "Bienvenue, {{ name }}", "text_body": "Salut {{ name }}"}}
    created = await _create(edge, tenant, variables_schema=schema, locales=locales)
    stub = template_service_pb2_grpc.TemplateServiceStub(edge)
    updated = await stub.UpdateTemplate(
        template_service_pb2.UpdateTemplateRequest(
            template={"id": created.id, "subject": "Hello again, {{ name }}"}
        ),
        metadata=tenant.metadata,
    )
    got = updated.template
    assert got.version == 2 and got.subject == "Hello again, {{ name }}"
    assert (got.html_body, got.text_body) == (created.html_body, created.text_body)
    assert got.variables_schema == schema
    assert set(got.locales) == {"fr"} and got.locales["fr"].subject == "Bienvenue, {{ name }}"
    latest = await stub.GetTemplate(
        template_service_pb2.GetTemplateRequest(template=created.id), metadata=tenant.metadata
    )
    assert latest.template == got

    mail_stub = mail_service_pb2_grpc.MailServiceStub(edge)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await mail_stub.SendEmail(
            mail(subject="", text_body="", template={"id": created.id, "variables": _vars(count=1)}),
            metadata=tenant.metadata,
        )
    assert bad_request_fields(caught.value) == ["template.variables.name"]
    rcpt = unique()
    await mail_stub.SendEmail(
        mail(
            to=[{"address": rcpt}],
            subject="",
            text_body="",
            template={"id": created.id, "locale": "fr", "variables": _vars(name="Ann", count=1)},
        ),
        metadata=tenant.metadata,
    )
    (received,) = await wait_for_mail(smtp_sink, rcpt)
    assert received.header("Subject") == "Bienvenue, Ann"


async def test_update_with_an_explicit_mask_can_still_clear_the_schema_and_locales(edge, tenant) -> None:
    schema = struct_pb2.Struct()
    schema.update({"type": "object", "required": ["name"]})
    created = await _create(
        edge, tenant, variables_schema=schema, locales={"fr": {"subject": "Salut", "text_body": "Salut"}}
    )
    stub = template_service_pb2_grpc.TemplateServiceStub(edge)
    updated = await stub.UpdateTemplate(
        template_service_pb2.UpdateTemplateRequest(
            template={"id": created.id}, update_mask={"paths": ["variables_schema", "locales"]}
        ),
        metadata=tenant.metadata,
    )
    assert not updated.template.HasField("variables_schema")
    assert dict(updated.template.locales) == {}
    assert updated.template.subject == created.subject
