"""PostgreSQL access for templates and their versions."""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import asyncpg

from libs.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from libs.request_id_store import Connection, answered, once
from libs.request_ids import RequestId
from services.template.kinds import Kind
from services.template.references import MAX_DEPENDENCIES, MAX_DEPTH, Target
from services.template.versions import StoredTemplate

__all__ = ["TemplateStore", "TemplateVersions"]


def _parse_uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


# Every column _row_to_template reads, of a template joined to one of its versions (alias v).
_SELECT = (
    "SELECT t.id, t.name, v.version, v.subject, v.html_body, v.text_body, v.variables_schema, v.draft,"
    " v.locales, v.mjml_body, t.kind, v.refs, t.create_time, v.create_time AS update_time FROM templates t"
)


class TemplateStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

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
        """Version 1 of a new template; with `request_id`, created at most once: a retry of the
        same request gets the first answer back, even after the template has changed."""
        template_id = uuid.uuid4()

        async def insert(conn: Connection) -> bytes:
            await conn.execute(
                "INSERT INTO templates (id, tenant_id, name, latest_version, head_version, kind)"
                " VALUES ($1, $2, $3, $4, 1, $5)",
                template_id,
                uuid.UUID(tenant_id),
                name,
                0 if draft else 1,
                int(kind),
            )
            await conn.execute(
                "INSERT INTO template_versions (template_id, version, subject, html_body, text_body,"
                " variables_schema, draft, locales, mjml_body, refs)"
                " VALUES ($1, 1, $2, $3, $4, $5, $6, $7, $8, $9)",
                template_id,
                subject,
                html,
                text,
                variables_schema,
                draft,
                locales,
                mjml_body,
                list(refs),
            )
            # Read back through the same connection: the transaction has not committed yet.
            created = await _fetch(conn, tenant_id, str(template_id), 1, include_drafts=True)
            if created is None:
                raise RuntimeError("a template inserted in this transaction cannot be read back")
            return _encode(created)

        try:
            async with self._pool.acquire() as conn:
                answer = await once(conn, request_id, lambda: insert(conn))
        except asyncpg.UniqueViolationError:
            raise AlreadyExists(f"a template named '{name}' already exists", field="template.name") from None
        return _decode(answer)

    async def replay(self, request_id: RequestId) -> StoredTemplate | None:
        """What the create that first used `request_id` answered, if one has committed."""
        answer = await answered(self._pool, request_id)
        return None if answer is None else _decode(answer)

    async def get(
        self, tenant_id: str, id_or_name: str, version: int, *, include_drafts: bool = False
    ) -> StoredTemplate:
        """By id or name, the pinned version or the latest; NOT_FOUND across tenants alike.

        Without `include_drafts` (the send path) drafts are invisible: version 0 means the newest
        published version and a pinned draft is not found. With it (previews), version 0 is the
        newest version of any kind.
        """
        found = await _fetch(self._pool, tenant_id, id_or_name, version, include_drafts=include_drafts)
        if found is None:
            what = f"version {version} of template" if version else "a published version of template"
            raise NotFound(f"{what} '{id_or_name}' not found")
        return found

    async def dependencies(
        self, tenant_id: str, names: Sequence[str], pinned: Mapping[str, int], *, include_drafts: bool
    ) -> dict[str, StoredTemplate]:
        """Every layout and partial reachable from `names`, at the pinned version or else the
        newest published one (the newest of any kind with `include_drafts`). One query per level."""
        found: dict[str, StoredTemplate] = {}
        wanted = set(names)
        for _ in range(MAX_DEPTH):
            missing = sorted(wanted - found.keys())
            if not missing:
                return found
            rows = await self._pool.fetch(
                _SELECT + " JOIN template_versions v ON v.template_id = t.id"
                " WHERE t.tenant_id = $1 AND t.delete_time IS NULL AND t.kind <> 1 AND t.name = ANY($2::text[])"
                " AND v.version = COALESCE(($3::jsonb ->> t.name)::int,"
                " CASE WHEN $4 THEN t.head_version ELSE t.latest_version END)",
                uuid.UUID(tenant_id),
                missing,
                json.dumps(dict(pinned)),
                include_drafts,
            )
            for row in rows:
                dep = _row_to_template(row)
                found[dep.name] = dep
                wanted.update(dep.refs)
            absent = sorted(set(missing) - found.keys())
            if absent:
                raise NotFound(f"layout or partial '{absent[0]}' not found (or it has no published version)")
            if len(found) > MAX_DEPENDENCIES:
                raise InvalidArgument(
                    [("template", f"uses more than {MAX_DEPENDENCIES} layouts and partials")]
                )
        if wanted - found.keys():
            raise InvalidArgument(
                [("template", f"layouts and partials nested deeper than {MAX_DEPTH} levels")]
            )
        return found

    async def dependency_graph(
        self, tenant_id: str, names: Sequence[str]
    ) -> tuple[dict[str, Target], dict[str, set[str]]]:
        """For a save: what each name reachable from `names` is (at its newest version), and the
        edges of both its newest and published versions, so a cycle through either is seen."""
        targets: dict[str, Target] = {}
        edges: dict[str, set[str]] = {}
        wanted = set(names)
        for _ in range(MAX_DEPTH + 1):
            missing = sorted(wanted - targets.keys())
            if not missing:
                break
            rows = await self._pool.fetch(
                "SELECT t.name, t.kind, (h.html_body <> '' OR h.mjml_body <> '') AS has_html,"
                " h.text_body <> '' AS has_text, h.refs AS head_refs, COALESCE(l.refs, '{}') AS latest_refs"
                " FROM templates t JOIN template_versions h ON h.template_id = t.id AND h.version = t.head_version"
                " LEFT JOIN template_versions l ON l.template_id = t.id AND l.version = t.latest_version"
                " WHERE t.tenant_id = $1 AND t.delete_time IS NULL AND t.name = ANY($2::text[])",
                uuid.UUID(tenant_id),
                missing,
            )
            for row in rows:
                targets[row["name"]] = Target(Kind(row["kind"]), row["has_html"], row["has_text"])
                edges[row["name"]] = set(row["head_refs"]) | set(row["latest_refs"])
                wanted |= edges[row["name"]]
            # Names with no template are reported by check_references; stop looking for them.
            for name in set(missing) - targets.keys():
                wanted.discard(name)
        return targets, edges


async def _fetch(
    conn: Connection | asyncpg.Pool, tenant_id: str, id_or_name: str, version: int, *, include_drafts: bool
) -> StoredTemplate | None:
    row = await conn.fetchrow(
        _SELECT + " JOIN template_versions v ON v.template_id = t.id"
        " WHERE t.tenant_id = $1 AND t.delete_time IS NULL AND (t.id = $2 OR ($2 IS NULL AND t.name = $3))"
        " AND v.version = CASE WHEN $4 > 0 THEN $4 WHEN $5 THEN t.head_version ELSE t.latest_version END"
        " AND ($5 OR NOT v.draft)",
        uuid.UUID(tenant_id),
        _parse_uuid(id_or_name),
        id_or_name,
        version,
        include_drafts,
    )
    return None if row is None else _row_to_template(row)


def _encode(t: StoredTemplate) -> bytes:
    """What a request id remembers: the version as the first call answered it."""
    fields: dict[str, Any] = dataclasses.asdict(t)
    fields["create_time"] = t.create_time.isoformat()
    fields["update_time"] = t.update_time.isoformat()
    return json.dumps(fields, sort_keys=True).encode()


def _decode(answer: bytes) -> StoredTemplate:
    fields = json.loads(answer)
    fields["create_time"] = datetime.fromisoformat(fields["create_time"])
    fields["update_time"] = datetime.fromisoformat(fields["update_time"])
    fields["kind"] = Kind(fields["kind"])
    fields["refs"] = tuple(fields["refs"])
    return StoredTemplate(**fields)


_SELECT_LATEST = _SELECT + " JOIN template_versions v ON v.template_id = t.id AND v.version = t.head_version"


def _row_to_template(row: asyncpg.Record) -> StoredTemplate:
    return StoredTemplate(
        id=str(row["id"]),
        name=row["name"],
        version=row["version"],
        subject=row["subject"],
        html_body=row["html_body"],
        text_body=row["text_body"],
        create_time=row["create_time"],
        update_time=row["update_time"],
        variables_schema=row["variables_schema"],
        draft=row["draft"],
        locales=row["locales"],
        mjml_body=row["mjml_body"],
        kind=Kind(row["kind"]),
        refs=tuple(row["refs"]),
    )


class TemplateVersions:
    """New versions, listing and soft deletion; versions already written never change."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def add_version(
        self,
        tenant_id: str,
        id_or_name: str,
        changes: dict[str, str],
        *,
        refs: Sequence[str],
        draft: bool = False,
    ) -> StoredTemplate:
        template_uuid = _parse_uuid(id_or_name)
        async with self._pool.acquire() as conn, conn.transaction():
            # Lock the template row first, then read its head: one locking join would, after waiting
            # for a concurrent update, recheck the new head against the old version row and find
            # nothing. The lock serialises updates so version numbers never collide.
            locked = await conn.fetchval(
                "SELECT id FROM templates WHERE tenant_id = $1 AND delete_time IS NULL"
                " AND (id = $2 OR ($2 IS NULL AND name = $3)) FOR UPDATE",
                uuid.UUID(tenant_id),
                template_uuid,
                id_or_name,
            )
            row = None
            if locked is not None:
                row = await conn.fetchrow(_SELECT_LATEST + " WHERE t.id = $1", locked)
            if row is None:
                raise NotFound(f"template '{id_or_name}' not found")
            current = _row_to_template(row)
            version = current.version + 1
            parts = {
                "subject": changes.get("subject", current.subject),
                "html_body": changes.get("html_body", current.html_body),
                "text_body": changes.get("text_body", current.text_body),
                "variables_schema": changes.get("variables_schema", current.variables_schema),
                "locales": changes.get("locales", current.locales),
                "mjml_body": changes.get("mjml_body", current.mjml_body),
            }
            await conn.execute(
                "INSERT INTO template_versions (template_id, version, subject, html_body, text_body,"
                " variables_schema, draft, locales, mjml_body, refs)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                row["id"],
                version,
                parts["subject"],
                parts["html_body"],
                parts["text_body"],
                parts["variables_schema"],
                draft,
                parts["locales"],
                parts["mjml_body"],
                list(refs),
            )
            # A draft moves only the head; publishing moves what sends use too.
            await conn.execute(
                "UPDATE templates SET head_version = $2,"
                " latest_version = CASE WHEN $3 THEN latest_version ELSE $2 END WHERE id = $1",
                row["id"],
                version,
                draft,
            )
        return await TemplateStore(self._pool).get(tenant_id, current.id, version, include_drafts=True)

    async def list(
        self, tenant_id: str, *, name_prefix: str, after_name: str, limit: int
    ) -> list[StoredTemplate]:
        rows = await self._pool.fetch(
            _SELECT_LATEST + " WHERE t.tenant_id = $1 AND t.delete_time IS NULL AND t.name > $2"
            " AND left(t.name, length($3)) = $3 ORDER BY t.name LIMIT $4",
            uuid.UUID(tenant_id),
            after_name,
            name_prefix,
            limit,
        )
        return [_row_to_template(r) for r in rows]

    async def delete(self, tenant_id: str, id_or_name: str) -> None:
        """Soft delete; refused while a live template's newest or published version still extends or
        includes it, because every send of that template would then fail."""
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "UPDATE templates SET delete_time = now() WHERE tenant_id = $1 AND delete_time IS NULL"
                " AND (id = $2 OR ($2 IS NULL AND name = $3)) RETURNING id, name",
                uuid.UUID(tenant_id),
                _parse_uuid(id_or_name),
                id_or_name,
            )
            if row is None:
                raise NotFound(f"template '{id_or_name}' not found")
            users = await conn.fetch(
                "SELECT DISTINCT t.name FROM templates t JOIN template_versions v ON v.template_id = t.id"
                " AND v.version IN (t.head_version, t.latest_version)"
                " WHERE t.tenant_id = $1 AND t.delete_time IS NULL AND $2 = ANY(v.refs) ORDER BY t.name LIMIT 10",
                uuid.UUID(tenant_id),
                row["name"],
            )
            if users:
                names = ", ".join(f"'{u['name']}'" for u in users)
                # Raising rolls the delete back.
                raise FailedPrecondition(f"'{row['name']}' is still used by {names}; update those first")
