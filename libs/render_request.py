"""The internal render request for a send's template reference: one place, so submission (which
checks a send before accepting it) and router (which builds it) always ask for the same thing."""

from __future__ import annotations

from postwire.internal.v1 import render_service_pb2
from postwire.v1 import message_pb2

__all__ = ["render_request"]


def render_request(
    tenant_id: str, ref: message_pb2.TemplateReference
) -> render_service_pb2.RenderMessageRequest:
    return render_service_pb2.RenderMessageRequest(
        tenant_id=tenant_id,
        template_id=ref.id,
        template_name=ref.name,
        version=ref.version,
        variables=ref.variables,
        locale=ref.locale,
    )
