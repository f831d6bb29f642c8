"""CSS inlining and the generated text part: what a mail client that strips <style> would show."""

from __future__ import annotations

from libs.mail.parts import Parts
from services.template.html_text import html_to_text
from services.template.render import Renderer

HTML = (
    "<html><head><title>t</title><style>p { color: #c00 } @media (max-width: 600px) { p { color: #00c } }"
    "</style></head><body><h1>Hi {{ name }}</h1><p>Reset it: <a href='https://example.com/r?t=1&amp;u=2'>"
    "reset your password</a></p><ul><li>one</li><li>two</li></ul><script>alert(1)</script>"
    "<p>Mail <a href='mailto:help@example.com'>help@example.com</a></p></body></html>"
)


def test_style_rules_are_inlined_and_media_queries_kept() -> None:
    out = Renderer().render(("t", 1), Parts("s", HTML, ""), {"name": "Ann"})
    assert '<p style="color: #c00;">Reset it:' in out.html_body
    assert "@media (max-width: 600px)" in out.html_body


def test_text_part_is_generated_with_links_kept() -> None:
    out = Renderer().render(("t", 2), Parts("s", HTML, ""), {"name": "Ann"})
    assert out.text_body == (
        "Hi Ann\n\nReset it: reset your password [https://example.com/r?t=1&u=2]\n\n- one\n- two\n\n"
        "Mail help@example.com\n"
    )


def test_a_given_text_part_is_kept() -> None:
    out = Renderer().render(("t", 3), Parts("s", HTML, "Plain {{ name }}"), {"name": "Ann"})
    assert out.text_body == "Plain Ann"


def test_remote_stylesheets_are_not_fetched() -> None:
    html = '<html><head><link rel="stylesheet" href="http://169.254.169.254/x.css"><style>p{color:red}</style></head><body><p>x</p></body></html>'
    out = Renderer().render(("t", 4), Parts("s", html, ""), {})
    assert 'style="color: red;"' in out.html_body


def test_html_to_text_drops_scripts_and_keeps_entities_decoded() -> None:
    assert html_to_text("<p>a &amp; b</p><script>x()</script><style>p{}</style>") == "a & b\n"
    assert html_to_text('<a href="javascript:alert(1)">click</a>') == "click\n"


def test_mjml_is_compiled_after_rendering_and_broken_mjml_names_the_field() -> None:
    from libs.errors import InvalidArgument

    source = "<mjml><mj-body><mj-section><mj-column><mj-text>Hi {{ name }}</mj-text></mj-column></mj-section></mj-body></mjml>"
    out = Renderer().render(("m", 1), Parts("s", source, ""), {"name": "<b>"}, mjml=True)
    assert "<mj-" not in out.html_body and "Hi &lt;b&gt;" in out.html_body
    assert out.text_body.strip() == "Hi <b>"
    try:
        Renderer().render(("m", 2), Parts("s", "<mjml><mj-body><mj-text>x</mj-body>", ""), {}, mjml=True)
    except InvalidArgument as exc:
        assert [f for f, _ in exc.violations] == ["mjml_body"]
    else:
        raise AssertionError("broken MJML was accepted")


def test_unknown_filters_are_rejected_when_saved_with_line_and_column() -> None:
    from libs.errors import InvalidArgument
    from services.template.render import check_syntax

    try:
        check_syntax(Parts("s", "<p>ok</p>\n<p>{{ name|nosuchfilter }}</p>", ""))
    except InvalidArgument as exc:
        assert exc.violations == [("template.html_body", "line 2, column 12: No filter named 'nosuchfilter'.")]
    else:
        raise AssertionError("an unknown filter was accepted")
