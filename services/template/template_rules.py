"""What a template version must be to be saved: names, sizes, parts per kind, syntax, locale
variants and the variables schema; pure (references to other templates: references.py)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from libs.errors import InvalidArgument
from libs.locales import locale_problem
from libs.mail.parts import Parts
from services.template.kinds import Kind
from services.template.render import check_syntax
from services.template.variables_schema import check_schema

__all__ = [
    "MAX_LOCALES",
    "MAX_PART_CHARS",
    "PARTS",
    "WRITABLE",
    "TemplateFields",
    "check_name",
    "check_parts",
    "locales_json",
    "schema_json",
    "sources",
]

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
MAX_PART_CHARS = 512 * 1024
MAX_LOCALES = 50
PARTS = ("subject", "html_body", "text_body", "mjml_body")
# What UpdateTemplate's mask may name.
WRITABLE = (*PARTS, "variables_schema", "locales")


@dataclass(frozen=True, slots=True)
class TemplateFields:
    """The writable fields of a version as a request gives them. `variables_schema` is JSON text,
    None when the request has none; `locales` maps a tag to its variant."""

    subject: str = ""
    html_body: str = ""
    text_body: str = ""
    mjml_body: str = ""
    variables_schema: str | None = None
    locales: Mapping[str, Parts] = field(default_factory=dict)

    def parts(self) -> dict[str, str]:
        return {p: str(getattr(self, p)) for p in PARTS}


def check_name(name: str) -> list[tuple[str, str]]:
    if _NAME.fullmatch(name):
        return []
    return [("template.name", "1-128 characters: letters, digits, '-', '_' and '.'")]


def part_violations(kind: Kind, parts: Mapping[str, str]) -> list[tuple[str, str]]:
    """The rules a version's parts must meet, on create and (after merging) on update."""
    violations = [
        (f"template.{p}", f"at most {MAX_PART_CHARS} characters")
        for p in PARTS
        if len(parts[p]) > MAX_PART_CHARS
    ]
    if kind is Kind.MESSAGE and not parts["subject"]:
        violations.append(("template.subject", "a subject template is required"))
    elif kind is not Kind.MESSAGE and parts["subject"]:
        violations.append(
            ("template.subject", f"a {kind.name.lower()} has no subject; the message template gives it")
        )
    if parts["html_body"] and parts["mjml_body"]:
        violations.append(("template.mjml_body", "give html_body or mjml_body, not both"))
    if not parts["html_body"] and not parts["text_body"] and not parts["mjml_body"]:
        violations.append(
            ("template.html_body", "at least one of html_body, mjml_body and text_body is required")
        )
    return violations


def check_parts(kind: Kind, parts: Mapping[str, str], *, also: list[tuple[str, str]] | None = None) -> None:
    """INVALID_ARGUMENT for the parts' rules (with `also`, violations found before), else for
    their template syntax."""
    violations = [*(also or []), *part_violations(kind, parts)]
    if violations:
        raise InvalidArgument(violations)
    check_syntax(Parts(parts["subject"], parts["html_body"], parts["text_body"]))
    if parts["mjml_body"]:
        try:
            check_syntax(Parts("", parts["mjml_body"], ""))
        except InvalidArgument as exc:
            raise InvalidArgument(
                [(f.replace("template.html_body", "template.mjml_body"), d) for f, d in exc.violations]
            ) from None


def locales_json(locales: Mapping[str, Parts], kind: Kind) -> str:
    """Locale variants as JSON text, each checked like the default parts."""
    if len(locales) > MAX_LOCALES:
        raise InvalidArgument([("template.locales", f"at most {MAX_LOCALES} locale variants")])
    violations: list[tuple[str, str]] = []
    for tag, content in locales.items():
        where = f'template.locales["{tag}"]'
        problem = locale_problem(tag)
        if problem:
            violations.append((where, problem))
            continue
        if kind is Kind.MESSAGE and not content.subject:
            violations.append((f"{where}.subject", "a subject template is required"))
        elif kind is not Kind.MESSAGE and content.subject:
            violations.append((f"{where}.subject", f"a {kind.name.lower()} has no subject"))
        if not content.html_body and not content.text_body:
            violations.append((f"{where}.html_body", "at least one of html_body and text_body is required"))
        for part in ("subject", "html_body", "text_body"):
            if len(getattr(content, part)) > MAX_PART_CHARS:
                violations.append((f"{where}.{part}", f"at most {MAX_PART_CHARS} characters"))
    if violations:
        raise InvalidArgument(violations)
    for tag, content in locales.items():
        check_syntax(content, field_prefix=f'template.locales["{tag}"]')
    return json.dumps(
        {
            tag: {"subject": c.subject, "html_body": c.html_body, "text_body": c.text_body}
            for tag, c in locales.items()
        },
        sort_keys=True,
    )


def schema_json(schema: str | None) -> str:
    """The schema as stored ('' when absent), checked to be a valid JSON Schema."""
    if schema is None:
        return ""
    check_schema(schema)
    return schema


def sources(parts: Mapping[str, str], locales: str) -> dict[str, str]:
    """Every template source of a version by its field path, locale variants included."""
    found = {f"template.{p}": v for p, v in parts.items() if v}
    for tag, variant in json.loads(locales).items():
        found.update({f'template.locales["{tag}"].{p}': v for p, v in variant.items() if v})
    return found
