"""Rendering a template version: previews for authors (RenderTemplate) and messages for the send
path (the internal RenderService), one recipient or a batch.

The steps, in order: fetch the version (drafts only for previews) → on the send path, refuse
anything but a message template → fetch the layouts and partials it names, at the pinned versions
→ per recipient: check the variables against the schema → pick the locale variant → render in the
tenant's share of the render pool.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from libs.errors import InvalidArgument
from libs.locales import closest_locale, locale_problem
from libs.mail.parts import Parts
from services.template.kinds import Kind
from services.template.variables_schema import SchemaCache
from services.template.versions import StoredTemplate

__all__ = ["MAX_BATCH", "Batch", "Recipient", "RenderMessage", "RenderPort", "Rendered", "VersionReads"]

MAX_BATCH = 10_000


class VersionReads(Protocol):
    async def get(
        self, tenant_id: str, id_or_name: str, version: int, *, include_drafts: bool = False
    ) -> StoredTemplate: ...

    async def dependencies(
        self, tenant_id: str, names: Sequence[str], pinned: Mapping[str, int], *, include_drafts: bool
    ) -> dict[str, StoredTemplate]: ...


class RenderPort(Protocol):
    async def render(
        self,
        tenant: str,
        key: Any,
        parts: Parts,
        variables: Mapping[str, Any],
        *,
        mjml: bool,
        deps: Mapping[str, Parts],
        name: str,
    ) -> Parts: ...


@dataclass(frozen=True, slots=True)
class Prepared:
    """A template version and the layout and partial versions it uses, fetched once per call
    (once for a whole batch)."""

    template: StoredTemplate
    deps: Mapping[str, StoredTemplate]

    def versions_used(self) -> list[StoredTemplate]:
        return [self.template, *(self.deps[n] for n in sorted(self.deps))]


@dataclass(frozen=True, slots=True)
class Rendered:
    parts: Parts
    locale: str  # the variant used; "" for the default parts
    prepared: Prepared


@dataclass(frozen=True, slots=True)
class Recipient:
    variables: dict[str, Any]
    locale: str = ""


@dataclass(frozen=True, slots=True)
class Batch:
    """Per recipient, in order: its parts and locale, or the violations that refused it."""

    prepared: Prepared
    results: list[tuple[Parts, str] | InvalidArgument]


def _variant(t: StoredTemplate, locale: str) -> tuple[str, Parts]:
    """The closest locale variant's parts, MJML standing in for HTML when the version has it."""
    variants = json.loads(t.locales)
    tag = closest_locale(variants, locale)
    if tag:
        return tag, Parts(**variants[tag])
    return "", Parts(t.subject, t.mjml_body or t.html_body, t.text_body)


class RenderMessage:
    def __init__(self, versions: VersionReads, renderer: RenderPort) -> None:
        self._versions = versions
        self._renderer = renderer
        self._schemas = SchemaCache()

    async def preview(
        self, tenant_id: str, ref: str, version: int, variables: dict[str, Any], *, locale: str = ""
    ) -> Rendered:
        """Drafts included, so authors can check a version before publishing it."""
        problem = locale_problem(locale) if locale else ""
        if problem:
            raise InvalidArgument([("locale", problem)])
        prepared = await self._prepare(
            tenant_id, ref, version, include_drafts=True, pinned={}, for_send=False
        )
        parts, tag = await self._render(tenant_id, prepared, Recipient(variables, locale))
        return Rendered(parts, tag, prepared)

    async def for_send(
        self,
        tenant_id: str,
        ref: str,
        version: int,
        recipient: Recipient,
        *,
        pinned: Mapping[str, int],
    ) -> Rendered:
        """The send path: drafts never go out, and only message templates are sent."""
        prepared = await self._prepare(
            tenant_id, ref, version, include_drafts=False, pinned=pinned, for_send=True
        )
        parts, tag = await self._render(tenant_id, prepared, recipient)
        return Rendered(parts, tag, prepared)

    async def batch(
        self,
        tenant_id: str,
        ref: str,
        version: int,
        recipients: Sequence[Recipient],
        *,
        pinned: Mapping[str, int],
    ) -> Batch:
        """One fetch for every recipient; a recipient whose render is refused does not refuse the
        others."""
        if len(recipients) > MAX_BATCH:
            raise InvalidArgument([("recipients", f"at most {MAX_BATCH} recipients per call")])
        prepared = await self._prepare(
            tenant_id, ref, version, include_drafts=False, pinned=pinned, for_send=True
        )
        results: list[tuple[Parts, str] | InvalidArgument] = []
        for recipient in recipients:
            try:
                results.append(await self._render(tenant_id, prepared, recipient))
            except InvalidArgument as exc:
                results.append(exc)
        return Batch(prepared, results)

    async def _prepare(
        self,
        tenant_id: str,
        ref: str,
        version: int,
        *,
        include_drafts: bool,
        pinned: Mapping[str, int],
        for_send: bool,
    ) -> Prepared:
        stored = await self._versions.get(tenant_id, ref, version, include_drafts=include_drafts)
        if for_send and stored.kind is not Kind.MESSAGE:
            raise InvalidArgument(
                [
                    (
                        "template",
                        f"'{stored.name}' is a {stored.kind.name.lower()}; a send names a message template",
                    )
                ]
            )
        deps = (
            await self._versions.dependencies(tenant_id, stored.refs, pinned, include_drafts=include_drafts)
            if stored.refs
            else {}
        )
        return Prepared(stored, deps)

    async def _render(self, tenant_id: str, prepared: Prepared, recipient: Recipient) -> tuple[Parts, str]:
        """The closest locale variant rendered in the tenant's share of the render pool, and the
        variant's tag."""
        stored = prepared.template
        self._schemas.validate((stored.id, stored.version), stored.variables_schema, recipient.variables)
        tag, parts = _variant(stored, recipient.locale)
        dep_parts: dict[str, Parts] = {}
        signature: list[tuple[str, int, str]] = []
        for name in sorted(prepared.deps):
            dep = prepared.deps[name]
            dep_tag, dep_parts[name] = _variant(dep, recipient.locale)
            signature.append((dep.id, dep.version, dep_tag))
        # Versions never change, so this names one compiled template for the renderer's cache.
        key: Hashable = (stored.id, tag, stored.version, tuple(signature))
        mjml = bool(stored.mjml_body) and not tag
        rendered = await self._renderer.render(
            tenant_id, key, parts, recipient.variables, mjml=mjml, deps=dep_parts, name=stored.name
        )
        return rendered, tag
