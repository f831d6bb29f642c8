"""Attachment file names as the receiving side will read them; pure.

A blocked extension has to be blocked under every spelling that a receiver turns back into it.
Windows drops trailing dots and spaces ("evil.exe. ") and the default-stream suffix
("evil.exe::$DATA"); NTFS reads "a:b" as stream b of file a, so either side of a colon may be what
gets saved or run; mail clients keep only the last path part, and either drop or replace the
characters Windows forbids; comparisons ignore case, and some clients fold compatibility forms
(fullwidth letters) to ASCII. Control and invisible characters never get this far: the caller
refuses them first (libs.mail.addresses.has_unsafe_chars).
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["BLOCKED_EXTENSIONS", "is_blocked_filename", "receiver_names"]

BLOCKED_EXTENSIONS = frozenset(
    {
        ".exe",
        ".bat",
        ".cmd",
        ".com",
        ".js",
        ".jse",
        ".vbs",
        ".vbe",
        ".scr",
        ".msi",
        ".ps1",
        ".jar",
        ".pif",
        ".cpl",
    }
)

_WINDOWS_FORBIDDEN = re.compile(r'[<>"|?*]')
_SEPARATORS = re.compile(r"[:/\\]")
_TRAILING = re.compile(r"[\s.]+$")


def receiver_names(filename: str) -> set[str]:
    """Every name (casefolded) a receiver may save or run `filename` as."""
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", filename).casefold())
    names: set[str] = set()
    # A client that replaces forbidden characters ("_") cannot make a blocked extension; one
    # that drops them can ("evil.exe\"" -> "evil.exe"), so both the name and that form are read.
    for variant in (folded, _WINDOWS_FORBIDDEN.sub("", folded)):
        for part in _SEPARATORS.split(variant):
            names.add(_TRAILING.sub("", part))
    return names


def is_blocked_filename(filename: str) -> bool:
    """Whether any name a receiver may read `filename` as ends in a blocked extension."""
    return any(name.endswith(ext) for name in receiver_names(filename) for ext in BLOCKED_EXTENSIONS)
