"""Reading, listing and deleting templates: one store call each, kept behind a use case so the
servicer never reaches into the store."""

from __future__ import annotations

from typing import Protocol

from services.template.versions import StoredTemplate

__all__ = ["ManageTemplates", "TemplateReads", "VersionLists"]


class TemplateReads(Protocol):
    async def get(
        self, tenant_id: str, id_or_name: str, version: int, *, include_drafts: bool = False
    ) -> StoredTemplate: ...


class VersionLists(Protocol):
    async def list(
        self, tenant_id: str, *, name_prefix: str, after_name: str, limit: int
    ) -> list[StoredTemplate]: ...

    async def delete(self, tenant_id: str, id_or_name: str) -> None: ...


class ManageTemplates:
    def __init__(self, templates: TemplateReads, versions: VersionLists) -> None:
        self._templates = templates
        self._versions = versions

    async def get(self, tenant_id: str, ref: str, version: int) -> StoredTemplate:
        """Drafts included: authors read what they wrote, published or not."""
        return await self._templates.get(tenant_id, ref, version, include_drafts=True)

    async def list(
        self, tenant_id: str, *, name_prefix: str, after_name: str, limit: int
    ) -> list[StoredTemplate]:
        """By name, each at its newest version (draft or not)."""
        return await self._versions.list(
            tenant_id, name_prefix=name_prefix, after_name=after_name, limit=limit
        )

    async def delete(self, tenant_id: str, ref: str) -> None:
        """Refused (FAILED_PRECONDITION) while another live template uses it."""
        await self._versions.delete(tenant_id, ref)
