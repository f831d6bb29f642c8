"""Hand-written fakes of the template use cases' ports: templates in a dict, every call logged in
order, so a test can pin which steps ran and which did not."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from libs.errors import AlreadyExists, NotFound
from libs.mail.parts import Parts
from libs.request_ids import RequestId
from services.template.kinds import Kind
from services.template.references import Target
from services.template.versions import StoredTemplate

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def stored(name: str, *, kind: Kind = Kind.MESSAGE, version: int = 1, **fields: Any) -> StoredTemplate:
    defaults: dict[str, Any] = {
        "subject": "Hi {{ name }}" if kind is Kind.MESSAGE else "",
        "html_body": "<p>{{ name }}</p>",
        "text_body": "{{ name }}",
    }
    return StoredTemplate(
        id=f"id-{name}",
        name=name,
        version=version,
        create_time=NOW,
        update_time=NOW,
        kind=kind,
        **{**defaults, **fields},
    )


@dataclass
class FakeStore:
    """Both store ports (templates and versions) over one dict by name."""

    templates: dict[str, StoredTemplate] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    created: list[tuple[StoredTemplate, RequestId | None]] = field(default_factory=list)
    added: list[tuple[str, dict[str, str], tuple[str, ...], bool]] = field(default_factory=list)
    include_drafts: list[bool] = field(default_factory=list)
    pinned: list[Mapping[str, int]] = field(default_factory=list)

    async def replay(self, request_id: RequestId) -> StoredTemplate | None:
        self.calls.append("replay")
        for made, rid in self.created:
            if rid is not None and rid.value == request_id.value:
                if rid.fingerprint != request_id.fingerprint:
                    raise AlreadyExists("used with a different request", field="request_id")
                return made
        return None

    def _find(self, id_or_name: str) -> StoredTemplate:
        for t in self.templates.values():
            if id_or_name in (t.id, t.name):
                return t
        raise NotFound(f"template '{id_or_name}' not found")

    async def get(
        self, tenant_id: str, id_or_name: str, version: int, *, include_drafts: bool = False
    ) -> StoredTemplate:
        self.calls.append("get")
        self.include_drafts.append(include_drafts)
        return self._find(id_or_name)

    async def dependencies(
        self, tenant_id: str, names: Sequence[str], pinned: Mapping[str, int], *, include_drafts: bool
    ) -> dict[str, StoredTemplate]:
        self.calls.append("dependencies")
        self.pinned.append(pinned)
        return {n: self._find(n) for n in names}

    async def dependency_graph(
        self, tenant_id: str, names: Sequence[str]
    ) -> tuple[dict[str, Target], dict[str, set[str]]]:
        self.calls.append("dependency_graph")
        targets = {
            t.name: Target(t.kind, bool(t.html_body or t.mjml_body), bool(t.text_body))
            for t in self.templates.values()
        }
        return targets, {t.name: set(t.refs) for t in self.templates.values()}

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
        self.calls.append("create")
        made = stored(
            name,
            kind=kind,
            subject=subject,
            html_body=html,
            text_body=text,
            variables_schema=variables_schema,
            draft=draft,
            locales=locales,
            mjml_body=mjml_body,
            refs=tuple(refs),
        )
        self.templates[name] = made
        self.created.append((made, request_id))
        return made

    async def add_version(
        self,
        tenant_id: str,
        id_or_name: str,
        changes: dict[str, str],
        *,
        refs: Sequence[str],
        draft: bool = False,
    ) -> StoredTemplate:
        self.calls.append("add_version")
        current = self._find(id_or_name)
        self.added.append((id_or_name, changes, tuple(refs), draft))
        given: dict[str, Any] = dict(changes)
        new = replace(current, version=current.version + 1, draft=draft, refs=tuple(refs), **given)
        self.templates[current.name] = new
        return new

    async def list(
        self, tenant_id: str, *, name_prefix: str, after_name: str, limit: int
    ) -> list[StoredTemplate]:
        self.calls.append("list")
        names = sorted(n for n in self.templates if n.startswith(name_prefix) and n > after_name)
        return [self.templates[n] for n in names[:limit]]

    async def delete(self, tenant_id: str, id_or_name: str) -> None:
        self.calls.append("delete")
        del self.templates[self._find(id_or_name).name]


@dataclass
class FakeRenderer:
    """The render pool's port: fills each part's `{{ name }}` only, and records what it was asked."""

    calls: list[dict[str, Any]] = field(default_factory=list)

    async def render(
        self,
        tenant: str,
        key: Hashable,
        parts: Parts,
        variables: Mapping[str, Any],
        *,
        mjml: bool,
        deps: Mapping[str, Parts],
        name: str,
    ) -> Parts:
        self.calls.append({"key": key, "parts": parts, "mjml": mjml, "deps": dict(deps), "name": name})
        fill = str(variables.get("name", ""))
        return Parts(
            *(p.replace("{{ name }}", fill) for p in (parts.subject, parts.html_body, parts.text_body))
        )
