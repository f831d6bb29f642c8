from __future__ import annotations

import json

import pytest

from libs.errors import InvalidArgument
from services.template.variables_schema import SchemaCache, check_schema

SCHEMA = json.dumps(
    {
        "type": "object",
        "required": ["name", "order"],
        "properties": {
            "name": {"type": "string", "minLength": 1},
            "order": {
                "type": "object",
                "required": ["total"],
                "properties": {
                    "total": {"type": "number"},
                    "items": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    }
)


def _fields(variables: dict) -> list[str]:
    with pytest.raises(InvalidArgument) as caught:
        SchemaCache().validate(("t", 1), SCHEMA, variables)
    return sorted(f for f, _ in caught.value.violations)


def test_missing_variables_are_named() -> None:
    assert _fields({}) == ["template.variables.name", "template.variables.order"]
    assert _fields({"name": "a", "order": {}}) == ["template.variables.order.total"]


def test_wrong_types_are_named_with_their_path() -> None:
    assert _fields({"name": 3, "order": {"total": "x", "items": ["a", 2]}}) == [
        "template.variables.name",
        "template.variables.order.items[1]",
        "template.variables.order.total",
    ]


def test_valid_variables_and_no_schema_pass() -> None:
    SchemaCache().validate(("t", 1), SCHEMA, {"name": "a", "order": {"total": 3}})
    SchemaCache().validate(("t", 1), "", {})


def test_invalid_schema_is_refused_on_save() -> None:
    with pytest.raises(InvalidArgument) as caught:
        check_schema(json.dumps({"type": "no-such-type"}))
    assert [f for f, _ in caught.value.violations] == ["template.variables_schema"]
