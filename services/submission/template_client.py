"""The accept use cases' template ports over the template service's RenderMessage and
RenderMessages RPCs."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from postwire.internal.v1 import render_service_pb2, render_service_pb2_grpc
from postwire.v1 import message_pb2

from libs.errors import InvalidArgument
from libs.grpcx.status import error_from_rpc
from libs.mail.parts import Parts
from libs.render_request import render_request
from services.submission.acceptance import PinnedTemplate

__all__ = ["TemplateClient"]

_TIMEOUT_SECONDS = 10.0
# RenderMessages renders one message after another in the tenant's share of the render pool, so
# its deadline grows with the batch (a 1,000-message batch gets 30 s).
_TIMEOUT_PER_MESSAGE_SECONDS = 0.02


def _in_template(violations: Sequence[tuple[str, str]]) -> InvalidArgument:
    # The template service names fields relative to the template; place them in the request.
    return InvalidArgument([(f if f.startswith("template") else f"template.{f}", d) for f, d in violations])


def _rpc_error(exc: grpc.aio.AioRpcError) -> Exception:
    error = error_from_rpc(exc, what="template service")
    if isinstance(error, InvalidArgument):
        return _in_template(error.violations)
    return error


class TemplateClient:
    def __init__(self, stub: render_service_pb2_grpc.RenderServiceAsyncStub) -> None:
        self._stub = stub

    async def pin(self, tenant_id: str, ref: message_pb2.TemplateReference) -> PinnedTemplate:
        try:
            rendered = await self._stub.RenderMessage(
                render_request(tenant_id, ref), timeout=_TIMEOUT_SECONDS, wait_for_ready=True
            )
        except grpc.aio.AioRpcError as exc:
            raise _rpc_error(exc) from None
        return PinnedTemplate(
            template_id=rendered.template_id,
            version=rendered.version,
            versions=list(rendered.template_versions),
            parts=Parts(rendered.subject, rendered.html_body, rendered.text_body),
        )

    async def pin_group(
        self, tenant_id: str, refs: Sequence[message_pb2.TemplateReference]
    ) -> list[PinnedTemplate | InvalidArgument]:
        """One RenderMessages call for references that name the same template and version."""
        first = refs[0]
        try:
            answer = await self._stub.RenderMessages(
                render_service_pb2.RenderMessagesRequest(
                    tenant_id=tenant_id,
                    template_id=first.id,
                    template_name=first.name,
                    version=first.version,
                    recipients=[
                        render_service_pb2.RecipientVariables(variables=ref.variables, locale=ref.locale)
                        for ref in refs
                    ],
                ),
                timeout=_TIMEOUT_SECONDS + _TIMEOUT_PER_MESSAGE_SECONDS * len(refs),
                wait_for_ready=True,
            )
        except grpc.aio.AioRpcError as exc:
            raise _rpc_error(exc) from None
        versions = list(answer.template_versions)
        return [
            _in_template([(v.field, v.description) for v in result.violations])
            if result.violations
            else PinnedTemplate(
                template_id=answer.template_id,
                version=answer.version,
                versions=versions,
                parts=Parts(result.subject, result.html_body, result.text_body),
            )
            for result in answer.results
        ]
