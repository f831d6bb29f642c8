"""Layouts and partials without I/O: finding references, checking them, cycles, and rendering
through a loader that only ever sees the given sources."""

from __future__ import annotations

import pytest

from libs.errors import InvalidArgument
from libs.mail.parts import Parts
from services.template.kinds import Kind
from services.template.references import Reference, Target, check_references, find_cycle, references_in
from services.template.render import Renderer


def test_references_are_found_with_statement_and_line() -> None:
    source = (
        '{% extends "base" %}\n{% block b %}{% include "foot" %}{% endblock %}\n{% import "macros" as m %}'
    )
    refs, problems = references_in(source, "template.html_body")
    assert problems == []
    assert refs == [
        Reference("extends", "base", 1),
        Reference("include", "foot", 2),
        Reference("import", "macros", 3),
    ]
    assert [r.wants for r in refs] == [Kind.LAYOUT, Kind.PARTIAL, Kind.PARTIAL]


def test_from_import_counts_as_a_partial_reference() -> None:
    refs, _ = references_in('{% from "macros" import button %}{{ button() }}', "f")
    assert refs == [Reference("import", "macros", 1)]


@pytest.mark.parametrize(
    "source",
    [
        "{% include name %}",
        "{% include 'a' ~ suffix %}",
        "{% include ['a', 'b'] %}",
        "{% extends layout_var %}",
        '{% include "" %}',
    ],
)
def test_names_must_be_literal_strings(source: str) -> None:
    refs, problems = references_in(source, "template.text_body")
    assert refs == []
    assert len(problems) == 1 and problems[0][0] == "template.text_body"
    assert "needs a literal template name" in problems[0][1]


def test_plain_text_and_broken_syntax_have_no_references() -> None:
    assert references_in("Hello {{ name }}", "f") == ([], [])
    # Syntax errors are the syntax check's to report, with their line.
    assert references_in("{% include 'a' ", "f") == ([], [])


TARGETS = {
    "base": Target(Kind.LAYOUT, has_html=True, has_text=False),
    "foot": Target(Kind.PARTIAL, has_html=True, has_text=True),
    "welcome": Target(Kind.MESSAGE, has_html=True, has_text=True),
}


def test_check_references_names_each_problem() -> None:
    part_refs = {
        "template.html_body": [Reference("extends", "base", 1), Reference("include", "nope", 2)],
        "template.text_body": [Reference("extends", "base", 1), Reference("include", "welcome", 3)],
    }
    assert check_references(Kind.MESSAGE, part_refs, TARGETS) == [
        ("template.html_body", "line 2: include 'nope': no partial with this name"),
        ("template.text_body", "line 1: extends 'base': the layout has no text_body"),
        ("template.text_body", "line 3: include 'welcome': 'welcome' is a message, not a partial"),
    ]


def test_good_references_pass() -> None:
    part_refs = {
        "template.html_body": [Reference("extends", "base", 1), Reference("include", "foot", 1)],
        'template.locales["fr"].text_body': [Reference("include", "foot", 1)],
    }
    assert check_references(Kind.MESSAGE, part_refs, TARGETS) == []


def test_partials_cannot_extend_and_subjects_cannot_reference() -> None:
    assert check_references(
        Kind.PARTIAL, {"template.html_body": [Reference("extends", "base", 1)]}, TARGETS
    ) == [("template.html_body", "line 1: extends 'base': a partial cannot extend a layout")]
    assert check_references(
        Kind.MESSAGE, {"template.subject": [Reference("include", "foot", 1)]}, TARGETS
    ) == [("template.subject", "the subject cannot extend or include templates")]


def test_find_cycle() -> None:
    assert find_cycle("a", {"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle("a", {"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle("a", {"a": {"a"}}) == ["a", "a"]
    # A cycle that does not pass through the saved template is not this save's doing, and is bounded.
    assert find_cycle("a", {"a": {"b"}, "b": {"c"}, "c": {"b"}}) is None


DEPS = {
    "base": Parts(
        "",
        "<main>{% block content %}{% endblock %}</main>{% include 'foot' %}",
        "== {% block content %}{% endblock %} ==",
    ),
    "foot": Parts("", "<small>{{ who }}</small>", "by {{ who }}"),
    "macros": Parts("", "{% macro button(url) %}<a href='{{ url }}'>go</a>{% endmacro %}", ""),
}


def test_render_through_layout_partial_and_macros_escapes_per_part() -> None:
    parts = Parts(
        "Hi {{ who }}",
        "{% extends 'base' %}{% block content %}{% from 'macros' import button %}{{ button(link) }}{% endblock %}",
        "{% extends 'base' %}{% block content %}{{ who }}{% endblock %}",
    )
    out = Renderer().render(
        ("t", "", 1, ()), parts, {"who": "<Zed>", "link": "https://x/?a=1&b=2"}, deps=DEPS
    )
    assert out.subject == "Hi <Zed>"
    assert out.html_body == "<main><a href='https://x/?a=1&amp;b=2'>go</a></main><small>&lt;Zed&gt;</small>"
    assert out.text_body == "== <Zed> =="


def test_loader_sees_nothing_but_the_given_sources() -> None:
    for name in ("/etc/passwd", "../../../etc/passwd", "file:///etc/passwd", "services/template/render.py"):
        with pytest.raises(InvalidArgument) as caught:
            Renderer().render(("t", "", 1, ()), Parts("s", f"{{% include '{name}' %}}", ""), {}, deps=DEPS)
        assert caught.value.violations == [("html_body", f"unknown layout or partial '{name}'")]


def test_cache_key_carries_dependency_versions() -> None:
    renderer = Renderer()
    parts = Parts("s", "{% extends 'base' %}{% block content %}x{% endblock %}", "")
    v1 = {"base": Parts("", "<1>{% block content %}{% endblock %}", "")}
    v2 = {"base": Parts("", "<2>{% block content %}{% endblock %}", "")}
    assert renderer.render(("t", "", 1, (("b", 1, ""),)), parts, {}, deps=v1).html_body == "<1>x"
    assert renderer.render(("t", "", 1, (("b", 2, ""),)), parts, {}, deps=v2).html_body == "<2>x"
    assert renderer.render(("t", "", 1, (("b", 1, ""),)), parts, {}, deps=v2).html_body == "<1>x"


def test_recursive_include_at_render_is_stopped_not_crashed() -> None:
    # Saves refuse cycles; this is the render-time backstop should one slip through.
    deps = {"loop": Parts("", "{% include 'loop' %}", "")}
    with pytest.raises(InvalidArgument) as caught:
        Renderer().render(("t", "", 1, ()), Parts("s", "{% include 'loop' %}", ""), {}, deps=deps)
    assert caught.value.violations[0][0] == "html_body"


def test_sandbox_holds_inside_partials() -> None:
    deps = {"evil": Parts("", "{{ ''.__class__.__mro__ }}", "")}
    with pytest.raises(InvalidArgument) as caught:
        Renderer().render(("t", "", 1, ()), Parts("s", "{% include 'evil' %}", ""), {}, deps=deps)
    assert caught.value.violations[0][0] == "html_body"
