"""TemplateService (public) and RenderService (internal): proto ↔ domain."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import json_format, struct_pb2
from postwire.internal.v1 import render_service_pb2, render_service_pb2_grpc
from postwire.v1 import template_pb2, template_service_pb2, template_service_pb2_grpc

from libs.errors import InvalidArgument
from libs.grpcx.auth import KeyResolver
from libs.locales import closest_locale, locale_problem
from libs.mail.parts import Parts
from libs.page_tokens import RESOURCES_PAGE_SIZE, PageTokens, page_size
from services.template.references import Kind, Reference, check_references, find_cycle, references_in, reject
from services.template.render import check_syntax, struct_to_variables
from services.template.render_pool import RenderPool
from services.template.store import StoredTemplate, TemplateStore, TemplateVersions
from services.template.variables_schema import SchemaCache, check_schema

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
MAX_PART_CHARS = 512 * 1024
_WRITABLE = ("subject", "html_body", "text_body", "mjml_body", "variables_schema", "locales")
MAX_LOCALES = 50
MAX_BATCH = 10_000


def _to_proto(t: StoredTemplate) -> template_pb2.Template:
    out = template_pb2.Template(
        id=t.id,
        name=t.name,
        version=t.version,
        subject=t.subject,
        html_body=t.html_body,
        text_body=t.text_body,
        draft=t.draft,
        mjml_body=t.mjml_body,
        kind=t.kind,  # type: ignore[arg-type]
        references=t.refs,
    )
    out.create_time.FromDatetime(t.create_time)
    out.update_time.FromDatetime(t.update_time)
    if t.variables_schema:
        json_format.Parse(t.variables_schema, out.variables_schema)
    for tag, parts in json.loads(t.locales).items():
        out.locales[tag].CopyFrom(template_pb2.LocalizedContent(**parts))
    return out


_PARTS = ("subject", "html_body", "text_body", "mjml_body")


def _part_violations(kind: Kind, parts: dict[str, str]) -> list[tuple[str, str]]:
    """The rules a version's parts must meet, on create and (after merging) on update."""
    violations = [
        (f"template.{p}", f"at most {MAX_PART_CHARS} characters")
        for p in _PARTS
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


def _check_parts_syntax(subject: str, html_body: str, text_body: str, mjml_body: str) -> None:
    check_syntax(Parts(subject, html_body, text_body))
    if mjml_body:
        try:
            check_syntax(Parts("", mjml_body, ""))
        except InvalidArgument as exc:
            raise InvalidArgument(
                [(f.replace("template.html_body", "template.mjml_body"), d) for f, d in exc.violations]
            ) from None


def _locales_json(t: template_pb2.Template, kind: Kind = Kind.MESSAGE) -> str:
    """Locale variants as JSON text, each checked like the default parts."""
    if len(t.locales) > MAX_LOCALES:
        raise InvalidArgument([("template.locales", f"at most {MAX_LOCALES} locale variants")])
    variants: dict[str, dict[str, str]] = {}
    violations: list[tuple[str, str]] = []
    for tag, content in t.locales.items():
        field = f'template.locales["{tag}"]'
        problem = locale_problem(tag)
        if problem:
            violations.append((field, problem))
            continue
        if kind is Kind.MESSAGE and not content.subject:
            violations.append((f"{field}.subject", "a subject template is required"))
        elif kind is not Kind.MESSAGE and content.subject:
            violations.append((f"{field}.subject", f"a {kind.name.lower()} has no subject"))
        if not content.html_body and not content.text_body:
            violations.append((f"{field}.html_body", "at least one of html_body and text_body is required"))
        for part in ("subject", "html_body", "text_body"):
            if len(getattr(content, part)) > MAX_PART_CHARS:
                violations.append((f"{field}.{part}", f"at most {MAX_PART_CHARS} characters"))
        variants[tag] = {
            "subject": content.subject,
            "html_body": content.html_body,
            "text_body": content.text_body,
        }
    if violations:
        raise InvalidArgument(violations)
    for tag, parts in variants.items():
        check_syntax(Parts(**parts), field_prefix=f'template.locales["{tag}"]')
    return json.dumps(variants, sort_keys=True)


def _schema_json(t: template_pb2.Template) -> str:
    """The schema as JSON text ('' when absent), checked to be a valid JSON Schema."""
    if not t.HasField("variables_schema"):
        return ""
    text = json.dumps(json_format.MessageToDict(t.variables_schema), sort_keys=True)
    check_schema(text)
    return text


def _variables(struct: struct_pb2.Struct) -> dict[str, Any]:
    return struct_to_variables(json_format.MessageToDict(struct))  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True)
class Prepared:
    """A template version and the layout and partial versions it uses, fetched once per render
    call (once for a whole batch)."""

    template: StoredTemplate
    deps: dict[str, StoredTemplate]

    def versions_used(self) -> list[template_pb2.TemplateVersionUsed]:
        used = [self.template, *(self.deps[n] for n in sorted(self.deps))]
        return [
            template_pb2.TemplateVersionUsed(id=t.id, name=t.name, version=t.version, kind=t.kind)  # type: ignore[arg-type]
            for t in used
        ]


def _variant(t: StoredTemplate, locale: str) -> tuple[str, Parts]:
    """The closest locale variant's parts, MJML standing in for HTML when the version has it."""
    variants = json.loads(t.locales)
    tag = closest_locale(variants, locale)
    if tag:
        return tag, Parts(**variants[tag])
    return "", Parts(t.subject, t.mjml_body or t.html_body, t.text_body)


class TemplateCore:
    """Shared by both servicers: fetch, then render in the worker pool."""

    def __init__(self, store: TemplateStore, versions: TemplateVersions, renderer: RenderPool) -> None:
        self.store = store
        self.versions = versions
        self.renderer = renderer
        self.schemas = SchemaCache()

    async def prepare(
        self,
        tenant_id: str,
        id_or_name: str,
        version: int,
        *,
        include_drafts: bool,
        pinned: Mapping[str, int] | None = None,
        for_send: bool = False,
    ) -> Prepared:
        stored = await self.store.get(tenant_id, id_or_name, version, include_drafts=include_drafts)
        if for_send and stored.kind != Kind.MESSAGE:
            kind = Kind(stored.kind).name.lower()
            raise InvalidArgument(
                [("template", f"'{stored.name}' is a {kind}; a send names a message template")]
            )
        deps = (
            await self.store.dependencies(tenant_id, stored.refs, pinned or {}, include_drafts=include_drafts)
            if stored.refs
            else {}
        )
        return Prepared(stored, deps)

    async def render_prepared(
        self, tenant_id: str, prepared: Prepared, variables: dict[str, Any], locale: str
    ) -> tuple[Parts, str]:
        """Render the closest locale variant in the tenant's share of the render pool; returns
        the parts and the variant used."""
        stored = prepared.template
        self.schemas.validate((stored.id, stored.version), stored.variables_schema, variables)
        tag, parts = _variant(stored, locale)
        dep_parts: dict[str, Parts] = {}
        signature: list[tuple[str, int, str]] = []
        for name in sorted(prepared.deps):
            dep = prepared.deps[name]
            dep_tag, dep_parts[name] = _variant(dep, locale)
            signature.append((dep.id, dep.version, dep_tag))
        key = (stored.id, tag, stored.version, tuple(signature))
        mjml = bool(stored.mjml_body) and not tag
        rendered = await self.renderer.render(
            tenant_id, key, parts, variables, mjml=mjml, deps=dep_parts, name=stored.name
        )
        return rendered, tag

    async def render(
        self,
        tenant_id: str,
        id_or_name: str,
        version: int,
        variables: dict[str, Any],
        *,
        include_drafts: bool,
        locale: str = "",
        pinned: Mapping[str, int] | None = None,
        for_send: bool = False,
    ) -> tuple[Prepared, Parts, str]:
        prepared = await self.prepare(
            tenant_id, id_or_name, version, include_drafts=include_drafts, pinned=pinned, for_send=for_send
        )
        parts, tag = await self.render_prepared(tenant_id, prepared, variables, locale)
        return prepared, parts, tag

    async def check_references(
        self, tenant_id: str, name: str, kind: Kind, sources: dict[str, str]
    ) -> list[str]:
        """Reject a version naming a missing layout or partial, one of the wrong kind, or one that
        would make a cycle; returns the names it references, to be stored with it."""
        part_refs: dict[str, list[Reference]] = {}
        violations: list[tuple[str, str]] = []
        for field, source in sources.items():
            part_refs[field], problems = references_in(source, field)
            violations += problems
        names = sorted({r.name for refs in part_refs.values() for r in refs})
        if names:
            targets, edges = await self.store.dependency_graph(tenant_id, names)
            violations += check_references(kind, part_refs, targets)
            edges[name] = set(names)
            cycle = find_cycle(name, edges)
            if cycle:
                violations.append(("template", f"includes itself: {' -> '.join(cycle)}"))
        reject(violations)
        return names


def _sources(prefix: str, parts: Mapping[str, str], locales_json: str) -> dict[str, str]:
    """Every template source of a version by its field path, locale variants included."""
    sources = {f"{prefix}.{p}": v for p, v in parts.items() if v}
    for tag, variant in json.loads(locales_json).items():
        sources.update({f'{prefix}.locales["{tag}"].{p}': v for p, v in variant.items() if v})
    return sources


class TemplateApi(template_service_pb2_grpc.TemplateServiceServicer):
    def __init__(self, core: TemplateCore, keys: KeyResolver, pages: PageTokens) -> None:
        self._core = core
        self._keys = keys
        self._pages = pages

    async def CreateTemplate(
        self, request: template_service_pb2.CreateTemplateRequest, context: grpc.aio.ServicerContext
    ) -> template_service_pb2.CreateTemplateResponse:
        caller = await self._keys.resolve(context)
        caller.require("templates:write")
        t = request.template
        if t.kind not in tuple(Kind) and t.kind != 0:
            raise InvalidArgument([("template.kind", "must be TEMPLATE_KIND_MESSAGE, _LAYOUT or _PARTIAL")])
        kind = Kind(t.kind or Kind.MESSAGE)
        violations = []
        if not _NAME.fullmatch(t.name):
            violations.append(("template.name", "1-128 characters: letters, digits, '-', '_' and '.'"))
        parts = {p: getattr(t, p) for p in _PARTS}
        violations += _part_violations(kind, parts)
        if violations:
            raise InvalidArgument(violations)
        _check_parts_syntax(**parts)
        locales = _locales_json(t, kind)
        refs = await self._core.check_references(
            caller.tenant_id, t.name, kind, _sources("template", parts, locales)
        )
        stored = await self._core.store.create(
            caller.tenant_id,
            t.name,
            t.subject,
            t.html_body,
            t.text_body,
            _schema_json(t),
            draft=t.draft,
            locales=locales,
            mjml_body=t.mjml_body,
            kind=kind,
            refs=refs,
        )
        return template_service_pb2.CreateTemplateResponse(template=_to_proto(stored))

    async def GetTemplate(
        self, request: template_service_pb2.GetTemplateRequest, context: grpc.aio.ServicerContext
    ) -> template_service_pb2.GetTemplateResponse:
        caller = await self._keys.resolve(context)
        caller.require("templates:read")
        if not request.template:
            raise InvalidArgument([("template", "a template id or name is required")])
        stored = await self._core.store.get(
            caller.tenant_id, request.template, request.version, include_drafts=True
        )
        return template_service_pb2.GetTemplateResponse(template=_to_proto(stored))

    async def RenderTemplate(
        self, request: template_service_pb2.RenderTemplateRequest, context: grpc.aio.ServicerContext
    ) -> template_service_pb2.RenderTemplateResponse:
        caller = await self._keys.resolve(context)
        caller.require("templates:read")
        if not request.template:
            raise InvalidArgument([("template", "a template id or name is required")])
        # A preview: drafts included, so authors can check a version before publishing it.
        if request.locale and locale_problem(request.locale):
            raise InvalidArgument([("locale", str(locale_problem(request.locale)))])
        prepared, parts, tag = await self._core.render(
            caller.tenant_id,
            request.template,
            request.version,
            _variables(request.variables),
            include_drafts=True,
            locale=request.locale,
        )
        return template_service_pb2.RenderTemplateResponse(
            subject=parts.subject,
            html_body=parts.html_body,
            text_body=parts.text_body,
            version=prepared.template.version,
            locale=tag,
            template_versions=prepared.versions_used(),
        )

    async def ListTemplates(
        self, request: template_service_pb2.ListTemplatesRequest, context: grpc.aio.ServicerContext
    ) -> template_service_pb2.ListTemplatesResponse:
        caller = await self._keys.resolve(context)
        caller.require("templates:read")
        size = page_size(request.page_size, default=RESOURCES_PAGE_SIZE)
        cursor = self._pages.cursor(request, caller=caller.tenant_id)
        rows = await self._core.versions.list(
            caller.tenant_id, name_prefix=request.name_prefix, after_name=cursor.after, limit=size + 1
        )
        page, token = cursor.page(rows, size, lambda t: t.name)
        return template_service_pb2.ListTemplatesResponse(
            templates=[_to_proto(t) for t in page], next_page_token=token
        )

    async def UpdateTemplate(
        self, request: template_service_pb2.UpdateTemplateRequest, context: grpc.aio.ServicerContext
    ) -> template_service_pb2.UpdateTemplateResponse:
        caller = await self._keys.resolve(context)
        caller.require("templates:write")
        t = request.template
        ref = t.id or t.name
        if not ref:
            raise InvalidArgument([("template.id", "the id (or name) of the template to update is required")])
        paths = list(request.update_mask.paths)
        if not paths:
            # AIP-134: no mask means the fields the request populates. The rest keep their values:
            # an absent schema or an empty locale map is "not given", never "clear".
            paths = [p for p in _PARTS if getattr(t, p)]
            if t.HasField("variables_schema"):
                paths.append("variables_schema")
            if t.locales:
                paths.append("locales")
        unknown = [p for p in paths if p not in _WRITABLE]
        if unknown:
            raise InvalidArgument(
                [
                    ("update_mask", f"'{p}' cannot be updated; writable: {', '.join(_WRITABLE)}")
                    for p in unknown
                ]
            )
        current = await self._core.store.get(caller.tenant_id, ref, 0, include_drafts=True)
        kind = Kind(current.kind)
        special = {"variables_schema": _schema_json, "locales": lambda t: _locales_json(t, kind)}
        changes = {p: special[p](t) if p in special else getattr(t, p) for p in paths}
        merged = {p: changes.get(p, getattr(current, p)) for p in _PARTS}
        violations = _part_violations(kind, merged)
        if violations:
            raise InvalidArgument(violations)
        _check_parts_syntax(**merged)
        refs = await self._core.check_references(
            caller.tenant_id,
            current.name,
            kind,
            _sources("template", merged, changes.get("locales", current.locales)),
        )
        stored = await self._core.versions.add_version(
            caller.tenant_id, current.id, changes, refs=refs, draft=t.draft
        )
        return template_service_pb2.UpdateTemplateResponse(template=_to_proto(stored))

    async def DeleteTemplate(
        self, request: template_service_pb2.DeleteTemplateRequest, context: grpc.aio.ServicerContext
    ) -> template_service_pb2.DeleteTemplateResponse:
        caller = await self._keys.resolve(context)
        caller.require("templates:write")
        if not request.template:
            raise InvalidArgument([("template", "a template id or name is required")])
        await self._core.versions.delete(caller.tenant_id, request.template)
        return template_service_pb2.DeleteTemplateResponse()


class RenderApi(render_service_pb2_grpc.RenderServiceServicer):
    def __init__(self, core: TemplateCore) -> None:
        self._core = core

    async def RenderMessage(
        self, request: render_service_pb2.RenderMessageRequest, context: grpc.aio.ServicerContext
    ) -> render_service_pb2.RenderMessageResponse:
        prepared, parts, tag = await self._core.render(
            request.tenant_id,
            request.template_id or request.template_name,
            request.version,
            _variables(request.variables),
            # The send path: drafts never go out.
            include_drafts=False,
            locale=request.locale,
            pinned=request.dependency_versions,
            for_send=True,
        )
        return render_service_pb2.RenderMessageResponse(
            subject=parts.subject,
            html_body=parts.html_body,
            text_body=parts.text_body,
            version=prepared.template.version,
            locale=tag,
            template_id=prepared.template.id,
            template_versions=prepared.versions_used(),
        )

    async def RenderMessages(
        self, request: render_service_pb2.RenderMessagesRequest, context: grpc.aio.ServicerContext
    ) -> render_service_pb2.RenderMessagesResponse:
        if len(request.recipients) > MAX_BATCH:
            raise InvalidArgument([("recipients", f"at most {MAX_BATCH} recipients per call")])
        prepared = await self._core.prepare(
            request.tenant_id,
            request.template_id or request.template_name,
            request.version,
            include_drafts=False,
            pinned=request.dependency_versions,
            for_send=True,
        )
        response = render_service_pb2.RenderMessagesResponse(
            template_id=prepared.template.id,
            version=prepared.template.version,
            template_versions=prepared.versions_used(),
        )
        for recipient in request.recipients:
            try:
                parts, tag = await self._core.render_prepared(
                    request.tenant_id, prepared, _variables(recipient.variables), recipient.locale
                )
            except InvalidArgument as exc:
                response.results.add(
                    violations=[
                        render_service_pb2.RenderViolation(field=f, description=d) for f, d in exc.violations
                    ]
                )
            else:
                response.results.add(
                    subject=parts.subject, html_body=parts.html_body, text_body=parts.text_body, locale=tag
                )
        return response
