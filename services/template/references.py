"""Which layouts and partials a template source names, and whether those names are allowed; pure.

Names must be literals so every dependency is known when a version is saved: a name computed from
variables could only fail when mail is sent, and could reach templates the author never meant.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from jinja2 import Environment, TemplateSyntaxError, nodes

from libs.errors import InvalidArgument
from services.template.kinds import Kind

__all__ = ["Reference", "Target", "check_references", "find_cycle", "references_in", "reject"]

MAX_DEPENDENCIES = 50
MAX_DEPTH = 10

# Parsing needs no sandbox: nothing is executed, and the AST is only read.
_PARSER = Environment()


@dataclass(frozen=True, slots=True)
class Reference:
    statement: str  # "extends", "include" or "import"
    name: str
    lineno: int

    @property
    def wants(self) -> Kind:
        return Kind.LAYOUT if self.statement == "extends" else Kind.PARTIAL


def references_in(source: str, field: str) -> tuple[list[Reference], list[tuple[str, str]]]:
    """The references in one part, and a violation for each name that is not a literal string."""
    if "{%" not in source:
        return [], []
    try:
        tree = _PARSER.parse(source)
    except TemplateSyntaxError:
        return [], []  # reported by the syntax check, with its line
    found: list[Reference] = []
    problems: list[tuple[str, str]] = []
    for node in tree.find_all((nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)):
        statement = {nodes.Extends: "extends", nodes.Include: "include"}.get(type(node), "import")
        target = node.template  # type: ignore[attr-defined]  # every node type in the find_all above has .template
        if isinstance(target, nodes.Const) and isinstance(target.value, str) and target.value:
            found.append(Reference(statement, target.value, node.lineno))
        else:
            problems.append((field, f"line {node.lineno}: {statement} needs a literal template name"))
    return found, problems


@dataclass(frozen=True, slots=True)
class Target:
    """What a referenced template is, as far as a save needs to know."""

    kind: Kind
    has_html: bool
    has_text: bool


def check_references(
    kind: Kind,
    part_references: Mapping[str, list[Reference]],
    targets: Mapping[str, Target],
) -> list[tuple[str, str]]:
    """Violations for references to missing templates, templates of the wrong kind, or parts the
    target does not have. `part_references` maps a field path ("template.html_body") to its refs."""
    violations: list[tuple[str, str]] = []
    for field, refs in part_references.items():
        part = field.rsplit(".", 1)[-1]
        if refs and part == "subject":
            violations.append((field, "the subject cannot extend or include templates"))
            continue
        for ref in refs:
            where = f"line {ref.lineno}: {ref.statement} '{ref.name}'"
            if ref.statement == "extends" and kind is Kind.PARTIAL:
                violations.append((field, f"{where}: a partial cannot extend a layout"))
                continue
            target = targets.get(ref.name)
            wanted = ref.wants.name.lower()
            if target is None:
                violations.append((field, f"{where}: no {wanted} with this name"))
            elif target.kind is not ref.wants:
                violations.append(
                    (field, f"{where}: '{ref.name}' is a {target.kind.name.lower()}, not a {wanted}")
                )
            elif part.endswith("text_body") and not target.has_text:
                violations.append((field, f"{where}: the {wanted} has no text_body"))
            elif not part.endswith("text_body") and not target.has_html:
                violations.append((field, f"{where}: the {wanted} has no html_body or mjml_body"))
    return violations


def find_cycle(start: str, edges: Mapping[str, Iterable[str]]) -> list[str] | None:
    """A path start → … → start through `edges` (name → names it references), if there is one."""
    stack: list[tuple[str, list[str]]] = [(start, [start])]
    seen: set[str] = set()
    while stack:
        name, path = stack.pop()
        for nxt in edges.get(name, ()):
            if nxt == start:
                return [*path, nxt]
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, [*path, nxt]))
    return None


def reject(violations: list[tuple[str, str]]) -> None:
    if violations:
        raise InvalidArgument(violations)
