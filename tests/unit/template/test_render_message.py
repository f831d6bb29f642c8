"""RenderMessage's steps with fake ports: fetch → (send path) message templates only → layouts and
partials → variables against the schema → locale variant → render."""

from __future__ import annotations

import json

import pytest

from libs.errors import InvalidArgument, NotFound
from libs.mail.parts import Parts
from services.template.kinds import Kind
from services.template.render_message import MAX_BATCH, Recipient, RenderMessage
from tests.unit.template.fakes import FakeRenderer, FakeStore, stored

TENANT = "00000000-0000-0000-0000-000000000001"
SCHEMA = json.dumps({"type": "object", "required": ["name"]})


def _use(store: FakeStore) -> tuple[RenderMessage, FakeRenderer]:
    renderer = FakeRenderer()
    return RenderMessage(store, renderer), renderer


async def test_a_send_renders_the_published_version_with_its_pinned_dependencies() -> None:
    store = FakeStore(
        {
            "welcome": stored("welcome", html_body='{% include "foot" %}', refs=("foot",)),
            "foot": stored("foot", kind=Kind.PARTIAL),
        }
    )
    use, renderer = _use(store)
    rendered = await use.for_send(TENANT, "welcome", 0, Recipient({"name": "Ada"}), pinned={"foot": 3})
    assert store.calls == ["get", "dependencies"]
    assert store.include_drafts == [False] and store.pinned == [{"foot": 3}]
    assert rendered.parts.subject == "Hi Ada"
    assert [t.name for t in rendered.prepared.versions_used()] == ["welcome", "foot"]
    assert list(renderer.calls[0]["deps"]) == ["foot"]


async def test_a_send_of_a_layout_is_refused_before_its_dependencies_are_fetched() -> None:
    store = FakeStore({"base": stored("base", kind=Kind.LAYOUT, refs=("foot",))})
    use, renderer = _use(store)
    with pytest.raises(InvalidArgument) as caught:
        await use.for_send(TENANT, "base", 0, Recipient({}), pinned={})
    assert caught.value.violations == [("template", "'base' is a layout; a send names a message template")]
    assert store.calls == ["get"] and renderer.calls == []


async def test_a_missing_template_is_not_found_and_nothing_is_rendered() -> None:
    use, renderer = _use(FakeStore())
    with pytest.raises(NotFound):
        await use.for_send(TENANT, "nowhere", 0, Recipient({}), pinned={})
    assert renderer.calls == []


async def test_variables_that_do_not_fit_the_schema_are_refused_before_rendering() -> None:
    store = FakeStore({"welcome": stored("welcome", variables_schema=SCHEMA)})
    use, renderer = _use(store)
    with pytest.raises(InvalidArgument) as caught:
        await use.for_send(TENANT, "welcome", 0, Recipient({}), pinned={})
    assert caught.value.violations == [("template.variables.name", "'name' is required")]
    assert renderer.calls == []


async def test_a_preview_includes_drafts_and_checks_the_locale_before_fetching() -> None:
    store = FakeStore({"welcome": stored("welcome", draft=True)})
    use, renderer = _use(store)
    with pytest.raises(InvalidArgument) as caught:
        await use.preview(TENANT, "welcome", 0, {"name": "Ada"}, locale="not a tag!")
    assert [f for f, _ in caught.value.violations] == ["locale"]
    assert store.calls == [] and renderer.calls == []
    rendered = await use.preview(TENANT, "welcome", 0, {"name": "Ada"})
    assert store.include_drafts == [True] and rendered.parts.text_body == "Ada"


async def test_the_closest_locale_variant_is_rendered_and_mjml_only_for_the_default_parts() -> None:
    locales = json.dumps(
        {"de": {"subject": "Hallo {{ name }}", "html_body": "<p>Hallo</p>", "text_body": ""}}
    )
    store = FakeStore(
        {"welcome": stored("welcome", html_body="", mjml_body="<mjml>{{ name }}</mjml>", locales=locales)}
    )
    use, renderer = _use(store)
    german = await use.for_send(TENANT, "welcome", 0, Recipient({"name": "Ada"}, "de-AT"), pinned={})
    default = await use.for_send(TENANT, "welcome", 0, Recipient({"name": "Ada"}, "fr"), pinned={})
    assert (german.locale, german.parts.subject) == ("de", "Hallo Ada")
    assert (default.locale, default.parts.html_body) == ("", "<mjml>Ada</mjml>")
    assert [c["mjml"] for c in renderer.calls] == [False, True]


async def test_a_batch_fetches_once_and_a_refused_recipient_does_not_refuse_the_others() -> None:
    store = FakeStore({"welcome": stored("welcome", variables_schema=SCHEMA)})
    use, renderer = _use(store)
    batch = await use.batch(
        TENANT,
        "welcome",
        0,
        [Recipient({"name": "Ada"}), Recipient({}), Recipient({"name": "Bo"})],
        pinned={},
    )
    assert store.calls == ["get"]
    first, refused, last = batch.results
    assert first == (Parts("Hi Ada", "<p>Ada</p>", "Ada"), "")
    assert isinstance(refused, InvalidArgument)
    assert refused.violations == [("template.variables.name", "'name' is required")]
    assert last == (Parts("Hi Bo", "<p>Bo</p>", "Bo"), "")
    assert len(renderer.calls) == 2


async def test_a_batch_too_large_is_refused_before_anything_is_fetched() -> None:
    store = FakeStore({"welcome": stored("welcome")})
    use, _ = _use(store)
    with pytest.raises(InvalidArgument) as caught:
        await use.batch(TENANT, "welcome", 0, [Recipient({})] * (MAX_BATCH + 1), pinned={})
    assert [f for f, _ in caught.value.violations] == ["recipients"]
    assert store.calls == []
