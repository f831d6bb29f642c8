"""The one rule for message stream and unsubscribe-group names; pure.

Every place that takes such a name (SendEmail, admission, suppressions, tenant limits) checks it
here, so a name one API accepts is never refused by the next: a stream a send may use is a stream
a tenant can put a limit on, and a group a send may name is a group a recipient can leave.

A name is 1 to 64 characters: lowercase ASCII letters, digits, "-" and "_", and it starts with a
letter or digit. The first character is restricted because policy stored names that way from the
start (no existing limit or suppression can start otherwise), "*" is taken for "all streams", and
a leading "-" reads as an option wherever a name is pasted into a command line.
"""

from __future__ import annotations

import re

__all__ = ["NAME_RULE", "name_problem"]

NAME_RULE = "1-64 characters: lowercase letters, digits, '-' and '_', starting with a letter or digit"
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


def name_problem(name: str) -> str | None:
    """Why `name` is not a valid stream or unsubscribe-group name, or None when it is."""
    return None if _NAME.fullmatch(name) else NAME_RULE
