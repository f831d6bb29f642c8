"""Sandboxed template rendering: what a caller sees for good, hostile and broken templates."""

from __future__ import annotations

import pytest

from libs.errors import InvalidArgument
from libs.mail.parts import Parts
from services.template.render import MAX_OUTPUT_CHARS, Renderer, check_syntax

SSTI_PAYLOADS = [
    "{{ ''.__class__.__mro__ }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ self._TemplateReference__context }}",
    "{{ ''.__class__ }}",
    "{{ '{0.__class__}'.format(x) }}",
    "{{ lipsum.__globals__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
]


def render_error(parts: Parts, variables: dict[str, object] | None = None) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as info:
        Renderer().render(("tpl_1", 1), parts, variables or {})
    return info.value


def assert_no_python_internals(error: InvalidArgument) -> None:
    texts = [error.message, *(description for _, description in error.violations)]
    for text in texts:
        assert "<class" not in text
        assert " at 0x" not in text
        assert "Traceback" not in text
        assert "<function" not in text
        assert "<module" not in text


@pytest.mark.parametrize("payload", SSTI_PAYLOADS)
@pytest.mark.parametrize("part", ["subject", "html_body", "text_body"])
def test_ssti_attempts_fail_without_leaking_internals(payload: str, part: str) -> None:
    fields = {"subject": "Hi", "html_body": "<p>ok</p>", "text_body": "ok", part: payload}
    error = render_error(Parts(**fields), {"x": 1})
    assert [field for field, _ in error.violations] == [part]
    assert_no_python_internals(error)


def test_undefined_variable_is_named() -> None:
    error = render_error(Parts("Hi {{ customer }}", "<p>x</p>", "x"))
    assert len(error.violations) == 1
    field, description = error.violations[0]
    assert field == "template.variables"
    assert "customer" in description
    assert "subject" in description


def test_undefined_variable_in_html_names_the_part() -> None:
    error = render_error(Parts("Hi", "<p>{{ order.total }}</p>", "x"), {"name": "Ada"})
    assert error.violations[0][0] == "template.variables"
    assert "order" in error.violations[0][1]
    assert "html_body" in error.violations[0][1]


def test_html_is_autoescaped_but_text_and_subject_are_not() -> None:
    parts = Parts("Re: {{ v }}", "<p>{{ v }}</p>", "Said: {{ v }}")
    out = Renderer().render(("tpl_1", 1), parts, {"v": "<script>alert('x')</script> & co"})
    assert out.html_body == "<p>&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; co</p>"
    assert out.text_body == "Said: <script>alert('x')</script> & co"
    assert out.subject == "Re: <script>alert('x')</script> & co"


def test_rendering_with_loops_filters_and_numbers() -> None:
    parts = Parts(
        "Order {{ order.id }} for {{ name|title }}",
        "<ul>{% for i in items %}<li>{{ i.sku }} x{{ i.qty }}</li>{% endfor %}</ul>",
        "{{ items|length }} items, total {{ '%.2f'|format(total) }}",
    )
    variables = {
        "order": {"id": 42},
        "name": "ada lovelace",
        "items": [{"sku": "A", "qty": 2}, {"sku": "B", "qty": 1}],
        "total": 19.5,
    }
    out = Renderer().render(("tpl_1", 1), parts, variables)
    assert out == Parts(
        subject="Order 42 for Ada Lovelace",
        html_body="<ul><li>A x2</li><li>B x1</li></ul>",
        text_body="2 items, total 19.50",
    )


def test_subject_is_stripped_and_empty_parts_stay_empty() -> None:
    out = Renderer().render(("tpl_1", 1), Parts("  Hi {{ n }}  ", "", "t"), {"n": "Ada"})
    assert out == Parts(subject="Hi Ada", html_body="", text_body="t")


@pytest.mark.parametrize("value", ["Hi\r\nBcc: victim@example.net", "a\nb", "a\rb", "a\u2028b", "a\0b"])
def test_subject_with_line_break_from_a_variable_is_rejected(value: str) -> None:
    error = render_error(Parts("Order {{ v }} shipped", "<p>x</p>", "x"), {"v": value})
    assert [field for field, _ in error.violations] == ["template.variables"]
    assert "rendered subject" in error.violations[0][1]


def test_rendered_subject_over_998_characters_is_rejected() -> None:
    error = render_error(Parts("{{ s }}", "", "t"), {"s": "x" * 999})
    assert [field for field, _ in error.violations] == ["subject"]


def test_syntax_errors_are_reported_with_line_and_column() -> None:
    with pytest.raises(InvalidArgument) as info:
        check_syntax(Parts("Hi {{ name }}", "<p>\n\n{{ name </p>", "{% for x in y %}\n{% endif %}"))
    violations = info.value.violations
    assert [field for field, _ in violations] == ["template.html_body", "template.text_body"]
    assert violations[0][1] == "line 3, column 10: unexpected '/'"
    assert violations[1][1].startswith("line 2, column 4: Encountered unknown tag 'endif'.")


def test_syntax_error_in_subject_uses_the_field_prefix() -> None:
    with pytest.raises(InvalidArgument) as info:
        check_syntax(Parts("Hi {{", "", ""), field_prefix="html")
    assert [field for field, _ in info.value.violations] == ["html.subject"]
    assert info.value.violations[0][1] == "line 1, column 4: unexpected 'end of template'"


def test_valid_syntax_passes_check() -> None:
    assert (
        check_syntax(Parts("Hi {{ name }}", "<p>{% if a %}{{ a }}{% endif %}</p>", "{{ b|upper }}")) is None
    )


def test_huge_range_is_refused() -> None:
    error = render_error(Parts("s", "{% for i in range(10**9) %}x{% endfor %}", ""))
    assert [field for field, _ in error.violations] == ["html_body"]
    assert_no_python_internals(error)


def test_output_cap_is_enforced() -> None:
    error = render_error(Parts("s", "", "{% for i in range(99999) %}{{ 'x' * 100 }}{% endfor %}"))
    assert [field for field, _ in error.violations] == ["text_body"]
    assert str(MAX_OUTPUT_CHARS) in error.violations[0][1]


def test_output_exactly_at_the_cap_is_allowed_and_one_more_is_not() -> None:
    out = Renderer().render(("a", 1), Parts("s", "", "{{ 'x' * n }}"), {"n": MAX_OUTPUT_CHARS})
    assert len(out.text_body) == MAX_OUTPUT_CHARS
    error = render_error(Parts("s", "{{ 'x' * n }}", ""), {"n": MAX_OUTPUT_CHARS + 1})
    assert [field for field, _ in error.violations] == ["html_body"]


def test_runtime_errors_show_the_class_only() -> None:
    error = render_error(Parts("s", "{{ 1 / 0 }}", ""))
    assert error.violations == [
        ("html_body", "the template, html_body line 1: cannot render: ZeroDivisionError")
    ]


def test_any_error_raised_by_template_code_names_the_template_part_and_line() -> None:
    with pytest.raises(InvalidArgument) as caught:
        Renderer().render(
            ("t", 1), Parts("s", "<p>a</p>\n<p>{{ '{}'.format() }}</p>", ""), {}, name="welcome"
        )
    assert caught.value.violations == [
        ("html_body", "'welcome', html_body line 2: cannot render: IndexError")
    ]


def test_an_error_in_a_layout_names_the_layout_and_its_line() -> None:
    deps = {"base": Parts("", "<html>\n\n{{ 1 / 0 }}{% block c %}{% endblock %}</html>", "")}
    with pytest.raises(InvalidArgument) as caught:
        Renderer().render(
            ("t", 1),
            Parts("s", "{% extends 'base' %}{% block c %}x{% endblock %}", ""),
            {},
            deps=deps,
            name="w",
        )
    assert caught.value.violations == [("html_body", "'w', 'base' line 3: cannot render: ZeroDivisionError")]


def test_cache_compiles_once_per_id_and_version() -> None:
    renderer = Renderer()
    parts = Parts("Hi {{ n }}", "<p>{{ n }}</p>", "{{ n }}")
    renderer.render(("tpl_1", 1), parts, {"n": "Ada"})
    compiled = renderer._cache[("tpl_1", 1)]
    out = renderer.render(("tpl_1", 1), parts, {"n": "Bob"})
    assert out.subject == "Hi Bob"
    assert len(renderer._cache) == 1
    assert renderer._cache[("tpl_1", 1)] is compiled
    assert all(a is b for a, b in zip(renderer._cache[("tpl_1", 1)], compiled, strict=True))

    renderer.render(("tpl_1", 2), parts, {"n": "Ada"})
    renderer.render(("tpl_2", 1), parts, {"n": "Ada"})
    assert len(renderer._cache) == 3
    assert renderer._cache[("tpl_1", 1)] is compiled


def test_cached_version_is_not_recompiled_from_new_source() -> None:
    # Versions are immutable, so the key alone identifies the compiled template.
    renderer = Renderer()
    assert renderer.render(("tpl_1", 1), Parts("first", "", "a"), {}).subject == "first"
    assert renderer.render(("tpl_1", 1), Parts("second", "", "b"), {}).subject == "first"


def test_cache_evicts_the_least_recently_used_entry() -> None:
    renderer = Renderer(max_entries=2)
    parts = Parts("s", "", "t")
    renderer.render(("a", 1), parts, {})
    renderer.render(("b", 1), parts, {})
    renderer.render(("a", 1), parts, {})  # "a" is now the most recent
    renderer.render(("c", 1), parts, {})
    assert list(renderer._cache) == [("a", 1), ("c", 1)]


@pytest.mark.parametrize(
    "source", ["{{ ('x' * 10**12)|length }}", "{{ ('x' * 300000000)|length }}", "{{ 2 ** 100000 }}"]
)
def test_huge_intermediate_values_are_refused(source: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        Renderer().render(("tpl_1", 1), Parts("s", "", source), {})
    assert [f for f, _ in info.value.violations] == ["text_body"]


def test_small_arithmetic_still_works() -> None:
    out = Renderer().render(("tpl_2", 1), Parts("s", "", "{{ 2 * 3 }} {{ 'ab' * 2 }} {{ 2 ** 10 }}"), {})
    assert out.text_body == "6 abab 1024"


def test_loops_that_spin_without_output_are_stopped_by_the_clock() -> None:
    renderer = Renderer(time_limit_seconds=0.2)
    spin = "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}"
    with pytest.raises(InvalidArgument) as caught:
        renderer.render(("spin", 1), Parts("s", spin, ""), {})
    assert caught.value.violations == [
        ("template", "the template, html_body line 1: rendering took longer than 0.2 s and was stopped")
    ]
    # Over a caller's own list, too: the output cap alone would never see these.
    many = {"rows": list(range(100000))}
    with pytest.raises(InvalidArgument):
        renderer.render(
            ("spin2", 1),
            Parts("s", "", "{% for a in rows %}{% for b in rows %}{% endfor %}{% endfor %}"),
            many,
        )


def test_after_a_stopped_render_the_next_one_works_and_no_timer_is_left_behind() -> None:
    import signal
    import time

    renderer = Renderer(time_limit_seconds=0.2)
    with pytest.raises(InvalidArgument):
        renderer.render(
            ("spin", 1),
            Parts("s", "{% for a in range(100000) %}{% for b in range(99999) %}{% endfor %}{% endfor %}", ""),
            {},
        )
    assert renderer.render(("ok", 1), Parts("Hi {{ n }}", "", "x"), {"n": 1}).subject == "Hi 1"
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    time.sleep(0.3)  # a stray alarm would raise here


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("Hi {{ x | nosuch }}", (1, 11)),
        ("a\n  {% if %}", (2, 3)),
        ("ok\nok\n   {% endfor %}", (3, 7)),
        ("{{ a b }}", (1, 6)),
    ],
)
def test_syntax_error_columns_point_into_the_line(source: str, expected: tuple[int, int]) -> None:
    with pytest.raises(InvalidArgument) as info:
        check_syntax(Parts("s", source, ""))
    line, column = expected
    assert info.value.violations[0][1].startswith(f"line {line}, column {column}: ")
