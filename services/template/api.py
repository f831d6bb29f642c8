"""TemplateService (public) and RenderService (internal): proto ↔ domain, one use case per call."""

from __future__ import annotations

from postwire.internal.v1 import render_service_pb2, render_service_pb2_grpc
from postwire.v1 import template_service_pb2, template_service_pb2_grpc

from libs.errors import required
from libs.grpcx.auth import Context, KeyResolver
from libs.page_tokens import RESOURCES_PAGE_SIZE, PageTokens, page_size
from libs.request_ids import RequestId
from services.template.manage_templates import ManageTemplates
from services.template.render_message import Recipient, RenderMessage
from services.template.save_template import SaveTemplate
from services.template.template_protos import (
    change_of,
    new_template_of,
    template_proto,
    variables_of,
    versions_used,
)

_NAMED = "a template id or name is required"


class TemplateApi(template_service_pb2_grpc.TemplateServiceServicer):
    def __init__(
        self,
        save: SaveTemplate,
        render: RenderMessage,
        manage: ManageTemplates,
        keys: KeyResolver,
        pages: PageTokens,
    ) -> None:
        self._save = save
        self._render = render
        self._manage = manage
        self._keys = keys
        self._pages = pages

    async def CreateTemplate(
        self, request: template_service_pb2.CreateTemplateRequest, context: Context
    ) -> template_service_pb2.CreateTemplateResponse:
        caller = await self._keys.authorize(context, "templates:write")
        request_id = RequestId.of(caller.tenant_id, "CreateTemplate", request)
        stored = await self._save.create(caller.tenant_id, new_template_of(request), request_id=request_id)
        return template_service_pb2.CreateTemplateResponse(template=template_proto(stored))

    async def GetTemplate(
        self, request: template_service_pb2.GetTemplateRequest, context: Context
    ) -> template_service_pb2.GetTemplateResponse:
        caller = await self._keys.authorize(context, "templates:read")
        ref = required(request.template, "template", _NAMED)
        stored = await self._manage.get(caller.tenant_id, ref, request.version)
        return template_service_pb2.GetTemplateResponse(template=template_proto(stored))

    async def RenderTemplate(
        self, request: template_service_pb2.RenderTemplateRequest, context: Context
    ) -> template_service_pb2.RenderTemplateResponse:
        caller = await self._keys.authorize(context, "templates:read")
        ref = required(request.template, "template", _NAMED)
        rendered = await self._render.preview(
            caller.tenant_id, ref, request.version, variables_of(request.variables), locale=request.locale
        )
        return template_service_pb2.RenderTemplateResponse(
            subject=rendered.parts.subject,
            html_body=rendered.parts.html_body,
            text_body=rendered.parts.text_body,
            version=rendered.prepared.template.version,
            locale=rendered.locale,
            template_versions=versions_used(rendered.prepared.versions_used()),
        )

    async def ListTemplates(
        self, request: template_service_pb2.ListTemplatesRequest, context: Context
    ) -> template_service_pb2.ListTemplatesResponse:
        caller = await self._keys.authorize(context, "templates:read")
        size = page_size(request.page_size, default=RESOURCES_PAGE_SIZE)
        cursor = self._pages.cursor(request, caller=caller.tenant_id)
        rows = await self._manage.list(
            caller.tenant_id, name_prefix=request.name_prefix, after_name=cursor.after, limit=size + 1
        )
        page, token = cursor.page(rows, size, lambda t: t.name)
        return template_service_pb2.ListTemplatesResponse(
            templates=[template_proto(t) for t in page], next_page_token=token
        )

    async def UpdateTemplate(
        self, request: template_service_pb2.UpdateTemplateRequest, context: Context
    ) -> template_service_pb2.UpdateTemplateResponse:
        caller = await self._keys.authorize(context, "templates:write")
        change = change_of(request)
        required(change.ref, "template.id", "the id (or name) of the template to update is required")
        stored = await self._save.update(caller.tenant_id, change)
        return template_service_pb2.UpdateTemplateResponse(template=template_proto(stored))

    async def DeleteTemplate(
        self, request: template_service_pb2.DeleteTemplateRequest, context: Context
    ) -> template_service_pb2.DeleteTemplateResponse:
        caller = await self._keys.authorize(context, "templates:write")
        await self._manage.delete(caller.tenant_id, required(request.template, "template", _NAMED))
        return template_service_pb2.DeleteTemplateResponse()


class RenderApi(render_service_pb2_grpc.RenderServiceServicer):
    def __init__(self, render: RenderMessage) -> None:
        self._render = render

    async def RenderMessage(
        self, request: render_service_pb2.RenderMessageRequest, context: Context
    ) -> render_service_pb2.RenderMessageResponse:
        rendered = await self._render.for_send(
            request.tenant_id,
            request.template_id or request.template_name,
            request.version,
            Recipient(variables_of(request.variables), request.locale),
            pinned=request.dependency_versions,
        )
        return render_service_pb2.RenderMessageResponse(
            subject=rendered.parts.subject,
            html_body=rendered.parts.html_body,
            text_body=rendered.parts.text_body,
            version=rendered.prepared.template.version,
            locale=rendered.locale,
            template_id=rendered.prepared.template.id,
            template_versions=versions_used(rendered.prepared.versions_used()),
        )

    async def RenderMessages(
        self, request: render_service_pb2.RenderMessagesRequest, context: Context
    ) -> render_service_pb2.RenderMessagesResponse:
        batch = await self._render.batch(
            request.tenant_id,
            request.template_id or request.template_name,
            request.version,
            [Recipient(variables_of(r.variables), r.locale) for r in request.recipients],
            pinned=request.dependency_versions,
        )
        response = render_service_pb2.RenderMessagesResponse(
            template_id=batch.prepared.template.id,
            version=batch.prepared.template.version,
            template_versions=versions_used(batch.prepared.versions_used()),
        )
        for result in batch.results:
            if isinstance(result, tuple):
                parts, tag = result
                response.results.add(
                    subject=parts.subject, html_body=parts.html_body, text_body=parts.text_body, locale=tag
                )
            else:
                response.results.add(
                    violations=[
                        render_service_pb2.RenderViolation(field=f, description=d)
                        for f, d in result.violations
                    ]
                )
        return response
