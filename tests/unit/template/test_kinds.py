"""Template kinds are the public proto's values, every one of them."""

from __future__ import annotations

import pytest
from postwire.v1 import template_pb2

from libs.errors import InvalidArgument
from services.template.kinds import Kind


def test_every_proto_kind_is_a_kind_with_the_same_name_and_value() -> None:
    proto = {
        name.removeprefix("TEMPLATE_KIND_"): value
        for name, value in template_pb2.TemplateKind.items()
        if value != template_pb2.TEMPLATE_KIND_UNSPECIFIED
    }
    assert {k.name: k.value for k in Kind} == proto


def test_an_unspecified_kind_is_a_message_template() -> None:
    assert Kind.of(template_pb2.TEMPLATE_KIND_UNSPECIFIED) is Kind.MESSAGE
    assert Kind.of(template_pb2.TEMPLATE_KIND_PARTIAL) is Kind.PARTIAL


def test_an_unknown_kind_is_refused_naming_the_field_and_the_choices() -> None:
    with pytest.raises(InvalidArgument) as caught:
        Kind.of(99)
    ((field, description),) = caught.value.violations
    assert field == "template.kind"
    assert "TEMPLATE_KIND_MESSAGE" in description and "TEMPLATE_KIND_PARTIAL" in description
