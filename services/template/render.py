"""Sandboxed Jinja2 compilation and rendering; pure, no I/O.

HTML autoescapes; subject and text do not. Undefined variables are errors naming the variable.
Rendering is streamed so a runaway template is stopped at the output cap instead of filling memory.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from typing import Any

import css_inline
from jinja2 import (
    FunctionLoader,
    StrictUndefined,
    Template,
    TemplateNotFound,
    TemplateSyntaxError,
    UndefinedError,
)
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from mjml import mjml2html

from libs.errors import InvalidArgument
from libs.mail.addresses import has_unsafe_chars
from libs.mail.parts import Parts
from services.template.html_text import html_to_text
from services.template.time_limit import RenderTimedOut, time_limit

__all__ = ["MAX_OUTPUT_CHARS", "Parts", "Renderer", "TemplateOutOfMemory", "check_syntax"]

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


class TemplateOutOfMemory(InvalidArgument):
    """The template's own code ran out of memory (in a worker, the address-space cap)."""


def _location(exc: BaseException, files: Mapping[str, str], name: str) -> str:
    """Where in the template code `exc` was raised: Jinja rewrites tracebacks so that each
    template's frames carry its file name and source line. `files` maps those file names to
    what the caller knows them as."""
    where = ""
    tb = exc.__traceback__
    while tb is not None:
        label = files.get(tb.tb_frame.f_code.co_filename)
        if label is not None:
            where = f"{label} line {tb.tb_lineno}"
        tb = tb.tb_next
    named = f"'{name}'" if name else "the template"
    if not where:
        return named
    return f"{named}, {where}"


def _render(
    template: Template,
    variables: Mapping[str, Any],
    part: str,
    *,
    files: Mapping[str, str],
    name: str,
    time_limit_seconds: float,
) -> str:
    out: list[str] = []
    size = 0
    try:
        for chunk in template.generate(**variables):
            size += len(chunk)
            if size > MAX_OUTPUT_CHARS:
                raise InvalidArgument([(part, f"rendered output exceeds {MAX_OUTPUT_CHARS} characters")])
            out.append(chunk)
    except InvalidArgument:
        raise
    except TemplateNotFound as exc:
        raise InvalidArgument([(part, f"unknown layout or partial '{exc.name}'")]) from None
    except UndefinedError as exc:
        raise InvalidArgument([("template.variables", f"{part}: {exc.message}")]) from None
    except SecurityError as exc:
        where = _location(exc, files, name)
        raise InvalidArgument([(part, f"{where}: not allowed in a template: {exc}")]) from None
    except RenderTimedOut as exc:
        where = _location(exc, files, name)
        raise InvalidArgument(
            [("template", f"{where}: rendering took longer than {time_limit_seconds:g} s and was stopped")]
        ) from None
    except MemoryError as exc:
        where = _location(exc, files, name)
        raise TemplateOutOfMemory([(part, f"{where}: rendering needed more memory than allowed")]) from None
    except Exception as exc:
        # Anything else raised while the template's code runs (a filter, `'{}'.format()`, a
        # division by zero) is the template's error. Show the class only: a Python repr could
        # carry internals into the caller's error.
        where = _location(exc, files, name)
        raise InvalidArgument([(part, f"{where}: cannot render: {type(exc).__name__}")]) from None
    return "".join(out)


_PART_FILES = {"<subject>": "subject", "<html_body>": "html_body", "<text_body>": "text_body"}


def _dep_file(name: str) -> str:
    return f"<{name}>"


def _from_string(env: _BoundedSandbox, source: str, part: str) -> Template:
    # Compiled under the part's own file name, so an error's traceback says which part it is in.
    code = env.compile(source, filename=f"<{part}>")
    return env.template_class.from_code(env, code, env.make_globals(None), None)


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
            # for the rest of the batch. Each is compiled under its own name, for error lines.
            def loader(field: str) -> FunctionLoader:
                def load(name: str) -> tuple[str, str, Callable[[], bool]] | None:
                    dep = deps.get(name)
                    return None if dep is None else (getattr(dep, field), _dep_file(name), lambda: True)

                return FunctionLoader(load)

            html_env = _HTML_ENV.overlay(loader=loader("html_body"))
            text_env = _TEXT_ENV.overlay(loader=loader("text_body"))
        compiled = (
            _from_string(_TEXT_ENV, parts.subject, "subject"),
            _from_string(html_env, parts.html_body, "html_body"),
            _from_string(text_env, parts.text_body, "text_body"),
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
        name: str = "",
    ) -> Parts:
        """Render all parts; with `mjml`, html_body is MJML, compiled after Jinja has run. `deps`
        are the layouts and partials by name; `key` must change whenever they do. `name` is the
        template's, for errors. The whole render, compile to text generation, is bounded by the
        time limit; errors raised by template code name the template, part and line."""
        try:
            with time_limit(self._time_limit):
                return self._render_parts(key, parts, variables, mjml, deps or {}, name)
        except RenderTimedOut:
            named = f"'{name}'" if name else "the template"
            raise InvalidArgument(
                [("template", f"{named}: rendering took longer than {self._time_limit:g} s and was stopped")]
            ) from None

    def _render_parts(
        self,
        key: Hashable,
        parts: Parts,
        variables: Mapping[str, Any],
        mjml: bool,
        deps: Mapping[str, Parts],
        name: str,
    ) -> Parts:
        subject_t, html_t, text_t = self._compiled(key, parts, deps)
        files = {**_PART_FILES, **{_dep_file(n): f"'{n}'" for n in deps}}

        def run(template: Template, part: str) -> str:
            return _render(
                template, variables, part, files=files, name=name, time_limit_seconds=self._time_limit
            )

        subject = run(subject_t, "subject").strip()
        problem = has_unsafe_chars(subject)
        if problem:
            raise InvalidArgument([("template.variables", f"rendered subject {problem}")])
        if len(subject) > MAX_SUBJECT_CHARS:
            raise InvalidArgument([("subject", f"rendered subject is longer than {MAX_SUBJECT_CHARS}")])
        html = run(html_t, "html_body") if parts.html_body else ""
        text = run(text_t, "text_body") if parts.text_body else ""
        # Below is our own post-processing: an unexpected error here is ours (INTERNAL), not the
        # template's. Only the input problems these libraries report are the caller's.
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
