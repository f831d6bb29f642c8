"""Proto ↔ domain conversion for the template servicers."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from google.protobuf import json_format, struct_pb2
from postwire.v1 import template_pb2, template_service_pb2

from libs.mail.parts import Parts
from services.template.kinds import Kind
from services.template.render import struct_to_variables
from services.template.save_template import NewTemplate, TemplateChange
from services.template.template_rules import PARTS, TemplateFields
from services.template.versions import StoredTemplate

__all__ = ["change_of", "new_template_of", "template_proto", "variables_of", "versions_used"]


def _fields(t: template_pb2.Template) -> TemplateFields:
    schema = (
        json.dumps(json_format.MessageToDict(t.variables_schema), sort_keys=True)
        if t.HasField("variables_schema")
        else None
    )
    return TemplateFields(
        subject=t.subject,
        html_body=t.html_body,
        text_body=t.text_body,
        mjml_body=t.mjml_body,
        variables_schema=schema,
        locales={tag: Parts(c.subject, c.html_body, c.text_body) for tag, c in t.locales.items()},
    )


def new_template_of(request: template_service_pb2.CreateTemplateRequest) -> NewTemplate:
    t = request.template
    return NewTemplate(name=t.name, kind=Kind.of(t.kind), fields=_fields(t), draft=t.draft)


def change_of(request: template_service_pb2.UpdateTemplateRequest) -> TemplateChange:
    t = request.template
    paths = list(request.update_mask.paths)
    if not paths:
        # AIP-134: no mask means the fields the request populates. The rest keep their values:
        # an absent schema or an empty locale map is "not given", never "clear".
        paths = [p for p in PARTS if getattr(t, p)]
        if t.HasField("variables_schema"):
            paths.append("variables_schema")
        if t.locales:
            paths.append("locales")
    return TemplateChange(ref=t.id or t.name, paths=paths, fields=_fields(t), draft=t.draft)


def variables_of(struct: struct_pb2.Struct) -> dict[str, Any]:
    variables: dict[str, Any] = struct_to_variables(json_format.MessageToDict(struct))
    return variables


def _kind(kind: Kind) -> template_pb2.TemplateKind.ValueType:
    return template_pb2.TemplateKind.ValueType(kind)


def template_proto(t: StoredTemplate) -> template_pb2.Template:
    out = template_pb2.Template(
        id=t.id,
        name=t.name,
        version=t.version,
        subject=t.subject,
        html_body=t.html_body,
        text_body=t.text_body,
        draft=t.draft,
        mjml_body=t.mjml_body,
        kind=_kind(t.kind),
        references=t.refs,
    )
    out.create_time.FromDatetime(t.create_time)
    out.update_time.FromDatetime(t.update_time)
    if t.variables_schema:
        json_format.Parse(t.variables_schema, out.variables_schema)
    for tag, parts in json.loads(t.locales).items():
        out.locales[tag].CopyFrom(template_pb2.LocalizedContent(**parts))
    return out


def versions_used(used: Iterable[StoredTemplate]) -> list[template_pb2.TemplateVersionUsed]:
    return [
        template_pb2.TemplateVersionUsed(id=t.id, name=t.name, version=t.version, kind=_kind(t.kind))
        for t in used
    ]
