"""One owner per decision, checked on the source: the statements that change `messages` and
`recipients` live in libs/pipeline, those on `event_outbox` in libs/event_outbox.py, and no
message or recipient state is spelled as a string outside libs/mail/states.py."""

from __future__ import annotations

import ast
import functools
import re
from collections.abc import Iterator
from pathlib import Path

from libs.mail.states import MessageState, RecipientState

ROOT = Path(__file__).resolve().parents[2]
STATES = {s.value for s in RecipientState} | {s.value for s in MessageState}
_CHANGES_PIPELINE = re.compile(
    r"\b(UPDATE|INSERT\s+INTO|DELETE\s+FROM)\s+(messages|recipients)\b", re.IGNORECASE
)
_OUTBOX = re.compile(r"\b(FROM|INTO|UPDATE)\s+event_outbox\b", re.IGNORECASE)
_QUOTED_STATE = re.compile(r"'(" + "|".join(sorted(STATES)) + r")'")

# The same words with other meanings, each named with what it is.
NOT_STATES = {
    ("libs/mail/dsn.py", "failed"),  # a DSN's Action field (RFC 3464)
    ("libs/testing/reports.py", "failed"),  # the DSN Action a test report carries
    ("services/mta_worker/mx_rules.py", "failed"),  # a DNS lookup's status
    ("services/inbound/store.py", "bounced"),  # an inbound counter's name
    ("services/events/webhook_dispatch.py", "failed"),  # a webhook attempt's outcome label
    ("services/mta_worker/delivery.py", "failed"),  # an SMTP phase's outcome label (metrics)
    ("services/events/webhook_dispatch.py", "delivered"),  # a webhook attempt's outcome label
}


@functools.cache
def _sources() -> tuple[tuple[str, ast.Module], ...]:
    """Every module parsed once for all the checks here (the trees are only read)."""
    found = []
    for top in ("services", "libs"):
        for path in sorted((ROOT / top).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel.startswith("libs/protogen/"):
                continue
            found.append((rel, ast.parse(path.read_text(encoding="utf-8"), filename=rel)))
    return tuple(found)


def _docstrings(tree: ast.Module) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def _strings(tree: ast.Module) -> Iterator[tuple[int, str]]:
    skip = _docstrings(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            yield node.lineno, node.value


def _statements(tree: ast.Module) -> Iterator[tuple[int, str]]:
    """Each string as the code spells it, adjacent literals (one SQL statement) joined."""
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            text = "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
            yield node.lineno, str(text)
    yield from _strings(tree)


def test_only_libs_pipeline_changes_messages_and_recipients() -> None:
    found = [
        f"{rel}:{line}"
        for rel, tree in _sources()
        if not rel.startswith("libs/pipeline/")
        for line, text in _statements(tree)
        if _CHANGES_PIPELINE.search(text)
    ]
    assert not found, found


def test_only_libs_event_outbox_touches_the_outbox_table() -> None:
    found = [
        f"{rel}:{line}"
        for rel, tree in _sources()
        if rel != "libs/event_outbox.py"
        for line, text in _statements(tree)
        if _OUTBOX.search(text)
    ]
    assert not found, found


def test_no_state_is_spelled_as_a_string_outside_states_py() -> None:
    found = [
        f"{rel}:{line}: {text!r}"
        for rel, tree in _sources()
        if rel != "libs/mail/states.py"
        for line, text in _strings(tree)
        if (text in STATES and (rel, text) not in NOT_STATES) or _QUOTED_STATE.search(text)
    ]
    assert not found, found
