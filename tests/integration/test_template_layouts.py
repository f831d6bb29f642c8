"""Layouts and partials: a tenant's shared frame and fragments, versioned, checked on save, and
recorded per send so a message is built from exactly the versions it was accepted with."""

from __future__ import annotations

import asyncio
import email
import email.policy
import uuid
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf import struct_pb2, timestamp_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from postwire.internal.v1 import render_service_pb2, render_service_pb2_grpc
from postwire.v1 import (
    mail_service_pb2,
    mail_service_pb2_grpc,
    template_pb2,
    template_service_pb2,
    template_service_pb2_grpc,
)

from tests.conftest import INTERNAL_AUTH, create_tenant
from tests.integration.helpers import mail, unique, wait_for_mail

LAYOUT = template_pb2.TEMPLATE_KIND_LAYOUT
PARTIAL = template_pb2.TEMPLATE_KIND_PARTIAL
MESSAGE = template_pb2.TEMPLATE_KIND_MESSAGE


def _vars(**values: object) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(values)
    return s


def _violations(exc: grpc.aio.AioRpcError) -> list[tuple[str, str]]:
    status = rpc_status.from_call(exc)  # type: ignore[arg-type]
    assert status is not None
    found = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            found += [(v.field, v.description) for v in bad.field_violations]
    return found


class Kit:
    """A tenant's template stub with unique names, so tests never collide."""

    def __init__(self, edge: grpc.aio.Channel, metadata: tuple[tuple[str, str], ...]) -> None:
        self.stub = template_service_pb2_grpc.TemplateServiceStub(edge)
        self.metadata = metadata
        self.suffix = uuid.uuid4().hex[:8]

    def name(self, base: str) -> str:
        return f"{base}-{self.suffix}"

    async def create(self, **fields: object) -> template_pb2.Template:
        answer = await self.stub.CreateTemplate(
            template_service_pb2.CreateTemplateRequest(template=fields), metadata=self.metadata
        )
        return answer.template

    async def update(self, paths: list[str], **fields: object) -> template_pb2.Template:
        answer = await self.stub.UpdateTemplate(
            template_service_pb2.UpdateTemplateRequest(template=fields, update_mask={"paths": paths}),
            metadata=self.metadata,
        )
        return answer.template

    async def refused(self, **fields: object) -> list[tuple[str, str]]:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await self.create(**fields)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
        return _violations(caught.value)

    async def frame(self) -> tuple[template_pb2.Template, template_pb2.Template]:
        """A footer partial and a layout that includes it."""
        footer = await self.create(
            name=self.name("footer"),
            kind=PARTIAL,
            html_body="<p class='foot'>Sent to {{ email }} by Acme</p>",
            text_body="-- sent to {{ email }} by Acme",
        )
        layout = await self.create(
            name=self.name("base"),
            kind=LAYOUT,
            html_body=(
                "<html><head><style>.foot { color: #999999 }</style></head><body>"
                "<h1>ACME</h1>{% block content %}{% endblock %}"
                f'{{% include "{footer.name}" %}}</body></html>'
            ),
            text_body=f'ACME\n\n{{% block content %}}{{% endblock %}}\n\n{{% include "{footer.name}" %}}',
        )
        return footer, layout


@pytest.fixture
def kit(edge: grpc.aio.Channel, tenant) -> Kit:
    return Kit(edge, tenant.metadata)


async def _message_template(kit: Kit, layout: template_pb2.Template) -> template_pb2.Template:
    return await kit.create(
        name=kit.name("receipt"),
        subject="Your receipt, {{ name }}",
        html_body=f'{{% extends "{layout.name}" %}}{{% block content %}}<p>Thanks, {{{{ name }}}}</p>{{% endblock %}}',
        text_body=f'{{% extends "{layout.name}" %}}{{% block content %}}Thanks, {{{{ name }}}}{{% endblock %}}',
    )


async def test_send_with_a_layout_and_partial_delivers_the_whole_frame_and_records_versions(
    edge, tenant, kit, smtp_sink
) -> None:
    footer, layout = await kit.frame()
    assert layout.kind == LAYOUT and list(layout.references) == [footer.name]
    receipt = await _message_template(kit, layout)
    assert list(receipt.references) == [layout.name]

    rcpt = unique()
    mail_stub = mail_service_pb2_grpc.MailServiceStub(edge)
    sent = await mail_stub.SendEmail(
        mail(
            to=[{"address": rcpt}],
            subject="",
            text_body="",
            template={"name": receipt.name, "variables": _vars(name="<Ann>", email=rcpt)},
        ),
        metadata=tenant.metadata,
    )
    (received,) = await wait_for_mail(smtp_sink, rcpt)
    parsed = email.message_from_bytes(received.data, policy=email.policy.default)
    assert parsed["Subject"] == "Your receipt, <Ann>"
    html = parsed.get_body(("html",)).get_content()
    assert "<h1>ACME</h1>" in html and "<p>Thanks, &lt;Ann&gt;</p>" in html
    # The layout's stylesheet was inlined into the partial's markup.
    assert f'<p class="foot" style="color: #999999;">Sent to {rcpt} by Acme</p>' in html
    text = parsed.get_body(("plain",)).get_content()
    assert "ACME" in text and "Thanks, <Ann>" in text and f"-- sent to {rcpt} by Acme" in text

    got = await mail_stub.GetMessage(
        mail_service_pb2.GetMessageRequest(message_id=sent.message_id), metadata=tenant.metadata
    )
    used = [(v.name, v.version, v.kind) for v in got.message.template_versions]
    assert used == [(receipt.name, 1, MESSAGE), (layout.name, 1, LAYOUT), (footer.name, 1, PARTIAL)]


async def test_a_send_is_built_from_the_layout_version_it_was_accepted_with(
    edge, tenant, kit, smtp_sink
) -> None:
    _, layout = await kit.frame()
    receipt = await _message_template(kit, layout)
    mail_stub = mail_service_pb2_grpc.MailServiceStub(edge)
    early, late = unique(), unique()
    # Scheduled a few seconds out, so the layout changes after acceptance and before the build.
    send_time = timestamp_pb2.Timestamp()
    send_time.FromDatetime(datetime.now(UTC) + timedelta(seconds=3))
    await mail_stub.SendEmail(
        mail(
            to=[{"address": early}],
            subject="",
            text_body="",
            send_time=send_time,
            template={"name": receipt.name, "variables": _vars(name="Bo", email=early)},
        ),
        metadata=tenant.metadata,
    )
    layout2 = await kit.update(
        ["html_body"],
        id=layout.id,
        html_body="<html><body><h1>ACME 2.0</h1>{% block content %}{% endblock %}</body></html>",
    )
    assert layout2.version == 2
    await mail_stub.SendEmail(
        mail(
            to=[{"address": late}],
            subject="",
            text_body="",
            template={"name": receipt.name, "variables": _vars(name="Cy", email=late)},
        ),
        metadata=tenant.metadata,
    )
    (old,) = await wait_for_mail(smtp_sink, early)
    (new,) = await wait_for_mail(smtp_sink, late)
    old_html = (
        email.message_from_bytes(old.data, policy=email.policy.default).get_body(("html",)).get_content()
    )
    new_html = (
        email.message_from_bytes(new.data, policy=email.policy.default).get_body(("html",)).get_content()
    )
    assert "<h1>ACME</h1>" in old_html and "ACME 2.0" not in old_html
    assert "<h1>ACME 2.0</h1>" in new_html and "by Acme" not in new_html


async def test_draft_layout_previews_without_reaching_sends(edge, tenant, kit, smtp_sink) -> None:
    _, layout = await kit.frame()
    receipt = await _message_template(kit, layout)
    await kit.update(
        ["html_body"],
        id=layout.id,
        draft=True,
        html_body="<html><body><h1>DRAFT FRAME</h1>{% block content %}{% endblock %}</body></html>",
    )
    preview = await kit.stub.RenderTemplate(
        template_service_pb2.RenderTemplateRequest(
            template=receipt.name, variables=_vars(name="Di", email="x@y")
        ),
        metadata=kit.metadata,
    )
    assert "DRAFT FRAME" in preview.html_body
    assert [(v.name, v.version) for v in preview.template_versions][:2] == [
        (receipt.name, 1),
        (layout.name, 2),
    ]

    rcpt = unique()
    await mail_service_pb2_grpc.MailServiceStub(edge).SendEmail(
        mail(
            to=[{"address": rcpt}],
            subject="",
            text_body="",
            template={"name": receipt.name, "variables": _vars(name="Di", email=rcpt)},
        ),
        metadata=tenant.metadata,
    )
    (received,) = await wait_for_mail(smtp_sink, rcpt)
    html = (
        email.message_from_bytes(received.data, policy=email.policy.default).get_body(("html",)).get_content()
    )
    assert "<h1>ACME</h1>" in html and "DRAFT FRAME" not in html


async def test_unknown_wrong_kind_and_dynamic_references_are_refused_on_save(kit) -> None:
    footer, layout = await kit.frame()
    assert await kit.refused(name=kit.name("a"), subject="s", html_body='{% extends "no-such-layout" %}') == [
        ("template.html_body", "line 1: extends 'no-such-layout': no layout with this name")
    ]
    assert await kit.refused(
        name=kit.name("b"), subject="s", html_body=f'x\n{{% include "{layout.name}" %}}'
    ) == [
        ("template.html_body", f"line 2: include '{layout.name}': '{layout.name}' is a layout, not a partial")
    ]
    assert await kit.refused(name=kit.name("c"), subject="s", text_body="{% include partial_name %}") == [
        ("template.text_body", "line 1: include needs a literal template name")
    ]
    assert await kit.refused(
        name=kit.name("d"), kind=PARTIAL, html_body=f'{{% extends "{layout.name}" %}}'
    ) == [("template.html_body", f"line 1: extends '{layout.name}': a partial cannot extend a layout")]
    assert await kit.refused(
        name=kit.name("e"), subject=f'{{% include "{footer.name}" %}}', text_body="x"
    ) == [("template.subject", "the subject cannot extend or include templates")]
    assert await kit.refused(name=kit.name("f"), kind=LAYOUT, subject="Hi", html_body="<p/>") == [
        ("template.subject", "a layout has no subject; the message template gives it")
    ]
    # A message template cannot be included: only partials can.
    msg = await kit.create(name=kit.name("msg"), subject="s", text_body="plain")
    assert await kit.refused(name=kit.name("g"), subject="s", text_body=f'{{% include "{msg.name}" %}}') == [
        ("template.text_body", f"line 1: include '{msg.name}': '{msg.name}' is a message, not a partial")
    ]
    # A locale variant is checked like the default parts.
    fields = await kit.refused(
        name=kit.name("h"),
        subject="s",
        text_body="x",
        locales={"fr": {"subject": "s", "text_body": '{% include "nope" %}'}},
    )
    assert fields == [
        ('template.locales["fr"].text_body', "line 1: include 'nope': no partial with this name")
    ]


async def test_include_cycles_are_refused(kit) -> None:
    a = await kit.create(name=kit.name("a"), kind=PARTIAL, text_body="A")
    b = await kit.create(name=kit.name("b"), kind=PARTIAL, text_body=f'B{{% include "{a.name}" %}}')
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await kit.update(["text_body"], id=a.id, text_body=f'A{{% include "{b.name}" %}}')
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _violations(caught.value) == [("template", f"includes itself: {a.name} -> {b.name} -> {a.name}")]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await kit.update(["text_body"], id=a.id, text_body=f'A{{% include "{a.name}" %}}')
    assert _violations(caught.value) == [("template", f"includes itself: {a.name} -> {a.name}")]


async def test_a_layout_in_use_cannot_be_deleted_and_cannot_be_sent(edge, tenant, kit) -> None:
    _, layout = await kit.frame()
    receipt = await _message_template(kit, layout)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await kit.stub.DeleteTemplate(
            template_service_pb2.DeleteTemplateRequest(template=layout.name), metadata=kit.metadata
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert receipt.name in caught.value.details()
    # Still there, and still rendering.
    await kit.stub.GetTemplate(
        template_service_pb2.GetTemplateRequest(template=layout.name), metadata=kit.metadata
    )

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await mail_service_pb2_grpc.MailServiceStub(edge).SendEmail(
            mail(subject="", text_body="", template={"name": layout.name}), metadata=tenant.metadata
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _violations(caught.value) == [
        ("template", f"'{layout.name}' is a layout; a send names a message template")
    ]

    await kit.stub.DeleteTemplate(
        template_service_pb2.DeleteTemplateRequest(template=receipt.name), metadata=kit.metadata
    )
    await kit.stub.DeleteTemplate(
        template_service_pb2.DeleteTemplateRequest(template=layout.name), metadata=kit.metadata
    )


async def test_another_tenants_layout_is_invisible(suite, edge, kit) -> None:
    _, layout = await kit.frame()
    other = Kit(edge, (await create_tenant(suite)).metadata)
    assert await other.refused(
        name=other.name("x"), subject="s", html_body=f'{{% extends "{layout.name}" %}}'
    ) == [("template.html_body", f"line 1: extends '{layout.name}': no layout with this name")]
    # Even a same-named layout of its own is the one used, never the first tenant's.
    mine = await other.create(
        name=layout.name, kind=LAYOUT, html_body="<b>OTHER</b>{% block content %}{% endblock %}"
    )
    msg = await other.create(
        name=other.name("m"),
        subject="s",
        html_body=f'{{% extends "{mine.name}" %}}{{% block content %}}c{{% endblock %}}',
    )
    preview = await other.stub.RenderTemplate(
        template_service_pb2.RenderTemplateRequest(template=msg.name), metadata=other.metadata
    )
    assert preview.html_body == "<b>OTHER</b>c"


async def test_batch_render_compiles_once_and_reports_each_recipient(suite, tenant, kit) -> None:
    _, layout = await kit.frame()
    receipt = await _message_template(kit, layout)
    recipients = [
        render_service_pb2.RecipientVariables(variables=_vars(name=f"R{i}", email=f"r{i}@example.com"))
        for i in range(200)
    ]
    recipients[7] = render_service_pb2.RecipientVariables(variables=_vars(name="no email"))
    async with grpc.aio.insecure_channel(suite.ports.addr("template")) as channel:
        answer = await render_service_pb2_grpc.RenderServiceStub(channel).RenderMessages(
            render_service_pb2.RenderMessagesRequest(
                tenant_id=tenant.id, template_name=receipt.name, recipients=recipients
            ),
            metadata=INTERNAL_AUTH,
            timeout=30,
        )
        assert answer.version == 1 and answer.template_id == receipt.id
        assert [v.name for v in answer.template_versions] == [receipt.name, layout.name, kit.name("footer")]
        assert len(answer.results) == 200
        assert answer.results[7].html_body == ""
        assert [(v.field, v.description) for v in answer.results[7].violations] == [
            ("template.variables", "html_body: 'email' is undefined")
        ]
        assert answer.results[8].subject == "Your receipt, R8"
        assert "Sent to r8@example.com by Acme" in answer.results[8].html_body
        assert all(not r.violations for i, r in enumerate(answer.results) if i != 7)

        # A layout cannot be rendered as a message, and another tenant's template is not found.
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await render_service_pb2_grpc.RenderServiceStub(channel).RenderMessages(
                render_service_pb2.RenderMessagesRequest(
                    tenant_id=str(uuid.uuid4()), template_name=receipt.name, recipients=recipients[:1]
                ),
                metadata=INTERNAL_AUTH,
                timeout=30,
            )
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_concurrent_layout_updates_get_distinct_versions(kit) -> None:
    _, layout = await kit.frame()
    versions = await asyncio.gather(
        *(
            kit.update(
                ["html_body"], id=layout.id, html_body=f"<i>{i}</i>{{% block content %}}{{% endblock %}}"
            )
            for i in range(5)
        )
    )
    assert sorted(v.version for v in versions) == [2, 3, 4, 5, 6]
