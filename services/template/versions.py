"""A stored template version, as every use case sees it; pure."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from services.template.kinds import Kind

__all__ = ["StoredTemplate"]


@dataclass(frozen=True, slots=True)
class StoredTemplate:
    """One version of a template joined with the template itself. `locales` is the JSON text of
    the locale variants ({tag: {subject, html_body, text_body}}); `refs` the layouts and partials
    the version names."""

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
    kind: Kind = Kind.MESSAGE
    refs: tuple[str, ...] = ()
