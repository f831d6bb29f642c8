"""JSON Schema checks for template variables; pure.

Checked when a version is saved (the schema itself) and before every render (the variables), so
a send with a missing or wrongly typed variable is refused naming that variable, before anything
is queued.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from libs.errors import InvalidArgument

__all__ = ["SchemaCache", "check_schema"]

MAX_VIOLATIONS = 20


def check_schema(schema_json: str) -> None:
    try:
        Draft202012Validator.check_schema(json.loads(schema_json))
    except SchemaError as exc:
        raise InvalidArgument(
            [("template.variables_schema", f"not a valid JSON Schema: {exc.message}")]
        ) from None


def _field(path: list[Any]) -> str:
    return "template.variables" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)


class SchemaCache:
    """Validators by (template id, version); versions are immutable, so entries never go stale."""

    def __init__(self, max_entries: int = 512) -> None:
        self._cache: OrderedDict[tuple[str, int], Draft202012Validator] = OrderedDict()
        self._max = max_entries

    def validate(self, key: tuple[str, int], schema_json: str, variables: dict[str, Any]) -> None:
        if not schema_json:
            return
        validator = self._cache.get(key)
        if validator is None:
            validator = Draft202012Validator(json.loads(schema_json))
            self._cache[key] = validator
            if len(self._cache) > self._max:
                self._cache.popitem(last=False)
        violations: list[tuple[str, str]] = []
        for error in validator.iter_errors(variables):
            path = list(error.absolute_path)
            if error.validator == "required" and isinstance(error.instance, dict):
                for name in error.validator_value:
                    if name not in error.instance:
                        violations.append((_field([*path, name]), f"'{name}' is required"))
            else:
                violations.append((_field(path), error.message[:300]))
            if len(violations) >= MAX_VIOLATIONS:
                break
        if violations:
            # jsonschema reports a `required` failure once per missing name, each carrying the
            # whole list; keep each violation once, in order.
            raise InvalidArgument(list(dict.fromkeys(violations)))
