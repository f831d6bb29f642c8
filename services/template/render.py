"""Sandboxed Jinja2 compilation and rendering; pure, no I/O.

HTML autoescapes; subject and text do not. Undefined variables are errors naming the variable.
Rendering is streamed so a runaway template is stopped at the output cap instead of filling memory.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import css_inline
from jinja2 import (
    DictLoader,
    StrictUndefined,
    Template,
    TemplateNotFound,
    TemplateSyntaxError,
    UndefinedError,
)
from jinja2.exceptions import SecurityError, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from mjml import mjml2html

from libs.errors import InvalidArgument
from libs.mail.addresses import has_unsafe_chars
from services.template.html_text import html_to_text
from services.template.time_limit import RenderTimedOut, time_limit

__all__ = ["MAX_OUTPUT_CHARS", "Parts", "Renderer", "check_syntax"]

MAX_OUTPUT_CHARS = 2 * 1024 * 1024
MAX_SUBJECT_CHARS = 998

MAX_EXPONENT = 64
DEFAULT_TIME_LIMIT_SECONDS = 2.0


class _BoundedSandbox(ImmutableSandboxedEnvironment):
    """Also bounds `*` and `**`, which the stock sandbox leaves alone: `'x' * 10**12` would
    allocate before any output cap could see it. Intercepting also stops compile-time folding."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, int | float) and abs(right) > MAX_EXPONENT:
            raise SecurityError(f"exponent larger than {MAX_EXPONENT}")
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if (
                    isinstance(seq, str | list | tuple)
                    and isinstance(times, int)
                    and len(seq) * times > MAX_OUTPUT_CHARS
                ):
                    raise SecurityError(f"repetition larger than {MAX_OUTPUT_CHARS} items")
        return super().call_binop(context, operator, left, right)


# Remote stylesheets are never fetched: a template must not make the server open URLs (SSRF).
_INLINER = css_inline.CSSInliner(load_remote_stylesheets=False, keep_style_tags=True)

_HTML_ENV = _BoundedSandbox(autoescape=True, undefined=StrictUndefined)
_TEXT_ENV = _BoundedSandbox(autoescape=False, undefined=StrictUndefined)


@dataclass(frozen=True, slots=True)
class Parts:
    subject: str
    html_body: str
    text_body: str


def _env(part: str) -> _BoundedSandbox:
    return _HTML_ENV if part == "html_body" else _TEXT_ENV


_QUOTED = re.compile(r"'([^']+)'")


def syntax_error_column(source: str, lineno: int, message: str) -> int:
    """Best 1-based column for a Jinja syntax error, which reports only its line: where the token
    the message quotes appears on that line, else the last tag or expression opened before it."""
    lines = source.splitlines() or [""]
    line = lines[min(max(lineno, 1), len(lines)) - 1]
    for token in _QUOTED.findall(message):
        at = line.find(token)
        if at >= 0:
            return at + 1
    opened = max(line.rfind("{%"), line.rfind("{{"))
    return opened + 1 if opened >= 0 else 1


def check_syntax(parts: Parts, *, field_prefix: str = "template") -> None:
    """Raise InvalidArgument with the line of every syntax error."""
    violations = []
    for part in ("subject", "html_body", "text_body"):
        source = getattr(parts, part)
        try:
            # Compiling (not just parsing) also catches unknown filters and tests at save time.
            _env(part).compile(source)
        except TemplateSyntaxError as exc:
            column = syntax_error_column(source, exc.lineno, exc.message or "")
            violations.append(
                (f"{field_prefix}.{part}", f"line {exc.lineno}, column {column}: {exc.message}")
            )
    if violations:
        raise InvalidArgument(violations)


def _render(template: Template, variables: Mapping[str, Any], part: str) -> str:
    out: list[str] = []
    size = 0
    try:
        for chunk in template.generate(**variables):
            size += len(chunk)
            if size > MAX_OUTPUT_CHARS:
                raise InvalidArgument([(part, f"rendered output exceeds {MAX_OUTPUT_CHARS} characters")])
            out.append(chunk)
    except TemplateNotFound as exc:
        raise InvalidArgument([(part, f"unknown layout or partial '{exc.name}'")]) from None
    except UndefinedError as exc:
        raise InvalidArgument([("template.variables", f"{part}: {exc.message}")]) from None
    except SecurityError as exc:
        raise InvalidArgument([(part, f"not allowed in a template: {exc}")]) from None
    except (TemplateError, ArithmeticError, TypeError, ValueError, RecursionError, MemoryError) as exc:
        # Show the class only: a Python repr could carry internals into the caller's error.
        raise InvalidArgument([(part, f"cannot render: {type(exc).__name__}")]) from None
    return "".join(out)


class Renderer:
    """Compiles on first use and caches by key: (template id and locale, version, and the versions
    of the layouts and partials it uses). Versions are immutable, so an entry never goes stale;
    a new version of a layout is a new key."""

    def __init__(
        self, max_entries: int = 512, *, time_limit_seconds: float = DEFAULT_TIME_LIMIT_SECONDS
    ) -> None:
        self._cache: OrderedDict[Hashable, tuple[Template, Template, Template]] = OrderedDict()
        self._max = max_entries
        self._time_limit = time_limit_seconds

    def _compiled(
        self, key: Hashable, parts: Parts, deps: Mapping[str, Parts]
    ) -> tuple[Template, Template, Template]:
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        html_env, text_env = _HTML_ENV, _TEXT_ENV
        if deps:
            # An overlay per entry: its loader sees only this tenant's pinned dependency sources
            # (never a file system), and its own cache keeps each included template compiled
            # for the rest of the batch.
            html_env = _HTML_ENV.overlay(loader=DictLoader({n: p.html_body for n, p in deps.items()}))
            text_env = _TEXT_ENV.overlay(loader=DictLoader({n: p.text_body for n, p in deps.items()}))
        compiled = (
            _TEXT_ENV.from_string(parts.subject),
            html_env.from_string(parts.html_body),
            text_env.from_string(parts.text_body),
        )
        self._cache[key] = compiled
        if len(self._cache) > self._max:
            self._cache.popitem(last=False)
        return compiled

    def render(
        self,
        key: Hashable,
        parts: Parts,
        variables: Mapping[str, Any],
        *,
        mjml: bool = False,
        deps: Mapping[str, Parts] | None = None,
    ) -> Parts:
        """Render all parts; with `mjml`, html_body is MJML, compiled after Jinja has run. `deps`
        are the layouts and partials by name; `key` must change whenever they do. The whole
        render, compile to text generation, is bounded by the time limit."""
        try:
            with time_limit(self._time_limit):
                return self._render_parts(key, parts, variables, mjml, deps or {})
        except RenderTimedOut:
            raise InvalidArgument(
                [("template", f"rendering took longer than {self._time_limit:g} s and was stopped")]
            ) from None

    def _render_parts(
        self, key: Hashable, parts: Parts, variables: Mapping[str, Any], mjml: bool, deps: Mapping[str, Parts]
    ) -> Parts:
        subject_t, html_t, text_t = self._compiled(key, parts, deps)
        subject = _render(subject_t, variables, "subject").strip()
        problem = has_unsafe_chars(subject)
        if problem:
            raise InvalidArgument([("template.variables", f"rendered subject {problem}")])
        if len(subject) > MAX_SUBJECT_CHARS:
            raise InvalidArgument([("subject", f"rendered subject is longer than {MAX_SUBJECT_CHARS}")])
        html = _render(html_t, variables, "html_body") if parts.html_body else ""
        text = _render(text_t, variables, "text_body") if parts.text_body else ""
        if html and mjml:
            try:
                html = mjml2html(html)
            except Exception as exc:  # the compiler's error types are not part of its API
                raise InvalidArgument([("mjml_body", f"not valid MJML: {type(exc).__name__}")]) from None
        if html:
            # Many clients drop <style>; inline it, keeping the tags for @media rules. Without a
            # <style> there is nothing to inline, and the part is left byte for byte as rendered.
            if "<style" in html.lower():
                try:
                    html = _INLINER.inline(html)
                except (css_inline.InlineError, ValueError):
                    raise InvalidArgument([("html_body", "the stylesheet could not be inlined")]) from None
            if not text:
                text = html_to_text(html)
        return Parts(subject=subject, html_body=html, text_body=text)


def struct_to_variables(value: Any) -> Any:
    """Struct numbers are doubles; give templates integers where the value is integral."""
    if isinstance(value, dict):
        return {k: struct_to_variables(v) for k, v in value.items()}
    if isinstance(value, list):
        return [struct_to_variables(v) for v in value]
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value
