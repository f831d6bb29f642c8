"""Saving templates: create one, or add a version to one (a draft, or published for sends).

Every save runs the same steps in this order, through the ports it is given: (a create with a
request id: replay lookup) → check the fields (rules that need nothing stored) → check the template
syntax → check the layouts and partials it names (which needs what is stored) → store. A retry is
answered before any check, since what it names may have changed since the first call; nothing is
stored unless every check passed; an update finds its template (NOT_FOUND) before it checks
anything it would merge.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from libs.errors import InvalidArgument
from libs.request_ids import RequestId
from services.template.kinds import Kind
from services.template.references import (
    Reference,
    Target,
    check_references,
    find_cycle,
    references_in,
    reject,
)
from services.template.template_rules import (
    PARTS,
    WRITABLE,
    TemplateFields,
    check_name,
    check_parts,
    locales_json,
    schema_json,
    sources,
)
from services.template.versions import StoredTemplate

__all__ = ["NewTemplate", "SaveTemplate", "TemplateChange", "TemplateWrites", "VersionWrites"]


@dataclass(frozen=True, slots=True)
class NewTemplate:
    name: str
    kind: Kind
    fields: TemplateFields
    draft: bool = False


@dataclass(frozen=True, slots=True)
class TemplateChange:
    """A new version of the template `ref` (id or name): the fields named by `paths` take their
    values from `fields`, the rest keep the newest version's."""

    ref: str
    paths: Sequence[str]
    fields: TemplateFields
    draft: bool = False


class TemplateWrites(Protocol):
    async def replay(self, request_id: RequestId) -> StoredTemplate | None:
        """The first answer to `request_id`; ALREADY_EXISTS when it came with another request."""
        ...

    async def get(
        self, tenant_id: str, id_or_name: str, version: int, *, include_drafts: bool = False
    ) -> StoredTemplate: ...

    async def dependency_graph(
        self, tenant_id: str, names: Sequence[str]
    ) -> tuple[dict[str, Target], dict[str, set[str]]]: ...

    async def create(
        self,
        tenant_id: str,
        name: str,
        subject: str,
        html: str,
        text: str,
        variables_schema: str = "",
        *,
        draft: bool = False,
        locales: str = "{}",
        mjml_body: str = "",
        kind: Kind = Kind.MESSAGE,
        refs: Sequence[str] = (),
        request_id: RequestId | None = None,
    ) -> StoredTemplate:
        """Store version 1; with `request_id`, at most once: a retry gets the first answer back."""
        ...


class VersionWrites(Protocol):
    async def add_version(
        self,
        tenant_id: str,
        id_or_name: str,
        changes: dict[str, str],
        *,
        refs: Sequence[str],
        draft: bool = False,
    ) -> StoredTemplate: ...


class SaveTemplate:
    def __init__(self, templates: TemplateWrites, versions: VersionWrites) -> None:
        self._templates = templates
        self._versions = versions

    async def create(
        self, tenant_id: str, new: NewTemplate, /, *, request_id: RequestId | None = None
    ) -> StoredTemplate:
        if request_id is not None:
            first = await self._templates.replay(request_id)
            if first is not None:
                return first
        parts = new.fields.parts()
        check_parts(new.kind, parts, also=check_name(new.name))
        locales = locales_json(new.fields.locales, new.kind)
        refs = await self._check_references(tenant_id, new.name, new.kind, sources(parts, locales))
        return await self._templates.create(
            tenant_id,
            new.name,
            parts["subject"],
            parts["html_body"],
            parts["text_body"],
            schema_json(new.fields.variables_schema),
            draft=new.draft,
            locales=locales,
            mjml_body=parts["mjml_body"],
            kind=new.kind,
            refs=refs,
            request_id=request_id,
        )

    async def update(self, tenant_id: str, change: TemplateChange, /) -> StoredTemplate:
        unknown = [p for p in change.paths if p not in WRITABLE]
        if unknown:
            raise InvalidArgument(
                [
                    ("update_mask", f"'{p}' cannot be updated; writable: {', '.join(WRITABLE)}")
                    for p in unknown
                ]
            )
        current = await self._templates.get(tenant_id, change.ref, 0, include_drafts=True)
        changes = {p: self._changed(p, change.fields, current.kind) for p in change.paths}
        merged = {p: changes.get(p, getattr(current, p)) for p in PARTS}
        check_parts(current.kind, merged)
        refs = await self._check_references(
            tenant_id, current.name, current.kind, sources(merged, changes.get("locales", current.locales))
        )
        return await self._versions.add_version(tenant_id, current.id, changes, refs=refs, draft=change.draft)

    @staticmethod
    def _changed(path: str, fields: TemplateFields, kind: Kind) -> str:
        if path == "variables_schema":
            return schema_json(fields.variables_schema)
        if path == "locales":
            return locales_json(fields.locales, kind)
        return str(getattr(fields, path))

    async def _check_references(
        self, tenant_id: str, name: str, kind: Kind, part_sources: Mapping[str, str]
    ) -> list[str]:
        """Reject a version naming a missing layout or partial, one of the wrong kind, or one that
        would make a cycle; returns the names it references, to be stored with it."""
        part_refs: dict[str, list[Reference]] = {}
        violations: list[tuple[str, str]] = []
        for where, source in part_sources.items():
            part_refs[where], problems = references_in(source, where)
            violations += problems
        names = sorted({r.name for refs in part_refs.values() for r in refs})
        if names:
            targets, edges = await self._templates.dependency_graph(tenant_id, names)
            violations += check_references(kind, part_refs, targets)
            edges[name] = set(names)
            cycle = find_cycle(name, edges)
            if cycle:
                violations.append(("template", f"includes itself: {' -> '.join(cycle)}"))
        reject(violations)
        return names
