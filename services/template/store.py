"""PostgreSQL access for templates and their versions."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from libs.errors import AlreadyExists, NotFound

__all__ = ["StoredTemplate", "TemplateStore"]


@dataclass(frozen=True, slots=True)
class StoredTemplate:
    id: str
    name: str
    version: int
    subject: str
    html_body: str
    text_body: str
    create_time: datetime
    update_time: datetime
    variables_schema: str = ""
    draft: bool = False
    locales: str = "{}"
    mjml_body: str = ""


def _parse_uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


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
    ) -> StoredTemplate:
        template_id = uuid.uuid4()
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute(
                    "INSERT INTO templates (id, tenant_id, name, latest_version, head_version)"
                    " VALUES ($1, $2, $3, $4, 1)",
                    template_id,
                    uuid.UUID(tenant_id),
                    name,
                    0 if draft else 1,
                )
                await conn.execute(
                    "INSERT INTO template_versions (template_id, version, subject, html_body, text_body,"
                    " variables_schema, draft, locales, mjml_body) VALUES ($1, 1, $2, $3, $4, $5, $6, $7, $8)",
                    template_id,
                    subject,
                    html,
                    text,
                    variables_schema,
                    draft,
                    locales,
                    mjml_body,
                )
        except asyncpg.UniqueViolationError:
            raise AlreadyExists(f"a template named '{name}' already exists", field="template.name") from None
        return await self.get(tenant_id, str(template_id), 0, include_drafts=True)

    async def get(
        self, tenant_id: str, id_or_name: str, version: int, *, include_drafts: bool = False
    ) -> StoredTemplate:
        """By id or name, the pinned version or the latest; NOT_FOUND across tenants alike.

        Without `include_drafts` (the send path) drafts are invisible: version 0 means the newest
        published version and a pinned draft is not found. With it (previews), version 0 is the
        newest version of any kind.
        """
        template_uuid = _parse_uuid(id_or_name)
        row = await self._pool.fetchrow(
            "SELECT t.id, t.name, v.version, v.subject, v.html_body, v.text_body, v.variables_schema, v.draft, v.locales, v.mjml_body,"
            " t.create_time, v.create_time AS update_time FROM templates t"
            " JOIN template_versions v ON v.template_id = t.id"
            " WHERE t.tenant_id = $1 AND t.delete_time IS NULL AND (t.id = $2 OR ($2 IS NULL AND t.name = $3))"
            " AND v.version = CASE WHEN $4 > 0 THEN $4 WHEN $5 THEN t.head_version ELSE t.latest_version END"
            " AND ($5 OR NOT v.draft)",
            uuid.UUID(tenant_id),
            template_uuid,
            id_or_name,
            version,
            include_drafts,
        )
        if row is None:
            what = f"version {version} of template" if version else "a published version of template"
            raise NotFound(f"{what} '{id_or_name}' not found")
        return _row_to_template(row)


_SELECT_LATEST = (
    "SELECT t.id, t.name, v.version, v.subject, v.html_body, v.text_body, v.variables_schema, v.draft, v.locales, v.mjml_body,"
    " t.create_time, v.create_time AS update_time FROM templates t"
    " JOIN template_versions v ON v.template_id = t.id AND v.version = t.head_version"
)


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
    )


class TemplateVersions:
    """New versions, listing and soft deletion; versions already written never change."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def add_version(
        self, tenant_id: str, id_or_name: str, changes: dict[str, str], *, draft: bool = False
    ) -> StoredTemplate:
        template_uuid = _parse_uuid(id_or_name)
        async with self._pool.acquire() as conn, conn.transaction():
            # FOR UPDATE serialises concurrent updates so version numbers never collide.
            row = await conn.fetchrow(
                _SELECT_LATEST + " WHERE t.tenant_id = $1 AND t.delete_time IS NULL"
                " AND (t.id = $2 OR ($2 IS NULL AND t.name = $3)) FOR UPDATE OF t",
                uuid.UUID(tenant_id),
                template_uuid,
                id_or_name,
            )
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
                " variables_schema, draft, locales, mjml_body) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                row["id"],
                version,
                parts["subject"],
                parts["html_body"],
                parts["text_body"],
                parts["variables_schema"],
                draft,
                parts["locales"],
                parts["mjml_body"],
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
        done = await self._pool.execute(
            "UPDATE templates SET delete_time = now() WHERE tenant_id = $1 AND delete_time IS NULL"
            " AND (id = $2 OR ($2 IS NULL AND name = $3))",
            uuid.UUID(tenant_id),
            _parse_uuid(id_or_name),
            id_or_name,
        )
        if done == "UPDATE 0":
            raise NotFound(f"template '{id_or_name}' not found")
