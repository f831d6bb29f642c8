"""Request → domain value conversion for the template servicers."""

from __future__ import annotations

from google.protobuf import field_mask_pb2
from postwire.v1 import template_pb2, template_service_pb2

from services.template.kinds import Kind
from services.template.template_protos import change_of, new_template_of, template_proto
from tests.unit.template.fakes import stored


def test_an_update_without_a_mask_changes_the_fields_it_populates() -> None:
    request = template_service_pb2.UpdateTemplateRequest(
        template=template_pb2.Template(
            name="welcome", text_body="new", locales={"de": template_pb2.LocalizedContent(text_body="neu")}
        )
    )
    change = change_of(request)
    assert (change.ref, list(change.paths)) == ("welcome", ["text_body", "locales"])
    assert change.fields.variables_schema is None


def test_an_update_with_a_mask_changes_exactly_what_it_names() -> None:
    request = template_service_pb2.UpdateTemplateRequest(
        template=template_pb2.Template(id="t-1", name="welcome", text_body="new"),
        update_mask=field_mask_pb2.FieldMask(paths=["html_body"]),
    )
    change = change_of(request)
    assert (change.ref, list(change.paths)) == ("t-1", ["html_body"])


def test_a_create_carries_kind_schema_and_locales_as_values() -> None:
    request = template_service_pb2.CreateTemplateRequest(
        template=template_pb2.Template(
            name="foot",
            kind=template_pb2.TEMPLATE_KIND_PARTIAL,
            text_body="x",
            locales={"de": template_pb2.LocalizedContent(text_body="y")},
        )
    )
    request.template.variables_schema.update({"type": "object"})
    new = new_template_of(request)
    assert new.kind is Kind.PARTIAL
    assert new.fields.variables_schema == '{"type": "object"}'
    assert new.fields.locales["de"].text_body == "y"


def test_a_stored_version_becomes_the_public_template() -> None:
    proto = template_proto(
        stored("foot", kind=Kind.PARTIAL, refs=("base",), variables_schema='{"type": "object"}')
    )
    assert proto.kind == template_pb2.TEMPLATE_KIND_PARTIAL
    assert list(proto.references) == ["base"]
    assert proto.variables_schema["type"] == "object"
