"""The three parts of a message a person writes: what templates render and the router builds."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Parts"]


@dataclass(frozen=True, slots=True)
class Parts:
    subject: str
    html_body: str
    text_body: str
