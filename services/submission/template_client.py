"""The accept use case's TemplateChecker port over the template service's RenderMessage RPC."""

from __future__ import annotations

import grpc
from postwire.internal.v1 import render_service_pb2_grpc
from postwire.v1 import message_pb2

from libs.errors import InvalidArgument
from libs.grpcx.status import error_from_rpc
from libs.render_request import render_request
from services.submission.accept import PinnedTemplate

__all__ = ["TemplateClient"]

_TIMEOUT_SECONDS = 10.0


class TemplateClient:
    def __init__(self, stub: render_service_pb2_grpc.RenderServiceAsyncStub) -> None:
        self._stub = stub

    async def pin(self, tenant_id: str, ref: message_pb2.TemplateReference) -> PinnedTemplate:
        try:
            rendered = await self._stub.RenderMessage(
                render_request(tenant_id, ref), timeout=_TIMEOUT_SECONDS, wait_for_ready=True
            )
        except grpc.aio.AioRpcError as exc:
            error = error_from_rpc(exc, what="template service")
            if isinstance(error, InvalidArgument):
                # The template service names fields relative to the template; place them in the request.
                error = InvalidArgument(
                    [(f if f.startswith("template") else f"template.{f}", d) for f, d in error.violations]
                )
            raise error from None
        return PinnedTemplate(
            template_id=rendered.template_id,
            version=rendered.version,
            versions=list(rendered.template_versions),
        )
