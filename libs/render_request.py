"""The internal render request for a send's template reference: one place, so submission (which
checks a send before accepting it) and router (which builds it) always ask for the same thing.

Also the stored form of the template versions a send was accepted with (messages.template_versions),
written by submission and read by the router and GetMessage.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from google.protobuf import json_format
from postwire.internal.v1 import render_service_pb2
from postwire.v1 import message_pb2, template_pb2

__all__ = ["render_request", "versions_from_json", "versions_to_json"]


def render_request(
    tenant_id: str,
    ref: message_pb2.TemplateReference,
    versions: Sequence[template_pb2.TemplateVersionUsed] = (),
) -> render_service_pb2.RenderMessageRequest:
    """`versions`, when the send was already accepted: the first is the template itself (already
    pinned in `ref`), the rest are the layouts and partials to render with."""
    return render_service_pb2.RenderMessageRequest(
        tenant_id=tenant_id,
        template_id=ref.id,
        template_name=ref.name,
        version=ref.version,
        variables=ref.variables,
        locale=ref.locale,
        dependency_versions={v.name: v.version for v in versions[1:]},
    )


def versions_to_json(versions: Sequence[template_pb2.TemplateVersionUsed]) -> str:
    return json.dumps([json_format.MessageToDict(v, preserving_proto_field_name=True) for v in versions])


def versions_from_json(text: str | None) -> list[template_pb2.TemplateVersionUsed]:
    if not text:
        return []
    return [json_format.ParseDict(v, template_pb2.TemplateVersionUsed()) for v in json.loads(text)]
