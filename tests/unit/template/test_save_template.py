"""SaveTemplate's steps with fake ports: fields → syntax → references → store, and nothing stored
when any check fails."""

from __future__ import annotations

import pytest
from postwire.v1 import template_pb2, template_service_pb2

from libs.errors import AlreadyExists, InvalidArgument, NotFound
from libs.mail.parts import Parts
from libs.request_ids import RequestId
from services.template.kinds import Kind
from services.template.save_template import NewTemplate, SaveTemplate, TemplateChange
from services.template.template_rules import TemplateFields
from tests.unit.template.fakes import FakeStore, stored

TENANT = "00000000-0000-0000-0000-000000000001"


def _save(store: FakeStore) -> SaveTemplate:
    return SaveTemplate(store, store)


def _new(name: str = "welcome", kind: Kind = Kind.MESSAGE, **fields: object) -> NewTemplate:
    given: dict[str, object] = {"subject": "Hi {{ name }}", "html_body": "<p>{{ name }}</p>", **fields}
    return NewTemplate(name, kind, TemplateFields(**given))  # type: ignore[arg-type]


def _fields(violations: list[tuple[str, str]]) -> list[str]:
    return [f for f, _ in violations]


async def test_a_create_without_references_checks_then_stores_once() -> None:
    store = FakeStore()
    made = await _save(store).create(TENANT, _new())
    assert store.calls == ["create"]
    assert made.name == "welcome" and made.kind is Kind.MESSAGE


async def test_a_create_with_references_looks_them_up_before_storing() -> None:
    store = FakeStore({"base": stored("base", kind=Kind.LAYOUT)})
    made = await _save(store).create(
        TENANT, _new(html_body='{% extends "base" %}{% block b %}x{% endblock %}')
    )
    assert store.calls == ["dependency_graph", "create"]
    assert made.refs == ("base",)


async def test_a_syntax_error_stores_nothing_and_looks_nothing_up() -> None:
    store = FakeStore()
    with pytest.raises(InvalidArgument) as caught:
        await _save(store).create(TENANT, _new(html_body='{% include "foot" %}{{ oops'))
    assert _fields(caught.value.violations) == ["template.html_body"]
    assert store.calls == []


async def test_a_bad_name_and_a_missing_subject_are_reported_together_before_syntax() -> None:
    store = FakeStore()
    with pytest.raises(InvalidArgument) as caught:
        await _save(store).create(TENANT, _new(name="no spaces", subject="", text_body="{{ oops"))
    assert _fields(caught.value.violations) == ["template.name", "template.subject"]
    assert store.calls == []


async def test_a_missing_layout_stores_nothing() -> None:
    store = FakeStore()
    with pytest.raises(InvalidArgument) as caught:
        await _save(store).create(TENANT, _new(html_body='{% extends "nowhere" %}'))
    assert "no layout with this name" in caught.value.violations[0][1]
    assert store.calls == ["dependency_graph"]


async def test_a_bad_locale_variant_stores_nothing() -> None:
    store = FakeStore()
    new = _new(locales={"xx-!!": Parts("Hallo", "<p>Hallo</p>", "")})
    with pytest.raises(InvalidArgument) as caught:
        await _save(store).create(TENANT, new)
    assert _fields(caught.value.violations) == ['template.locales["xx-!!"]']
    assert store.calls == []


async def test_a_bad_variables_schema_stores_nothing() -> None:
    store = FakeStore()
    with pytest.raises(InvalidArgument) as caught:
        await _save(store).create(TENANT, _new(variables_schema='{"type": 12}'))
    assert _fields(caught.value.violations) == ["template.variables_schema"]
    assert store.calls == []


def _rid(request_id: str, name: str) -> RequestId:
    request = template_service_pb2.CreateTemplateRequest(
        template=template_pb2.Template(name=name), request_id=request_id
    )
    rid = RequestId.of(TENANT, "CreateTemplate", request)
    assert rid is not None
    return rid


async def test_a_create_with_a_request_id_looks_for_a_first_answer_then_checks_and_stores() -> None:
    store = FakeStore()
    rid = _rid("r-1", "welcome")
    await _save(store).create(TENANT, _new(), request_id=rid)
    assert store.calls == ["replay", "create"]
    assert [r for _, r in store.created] == [rid]


async def test_a_retry_is_answered_before_any_check_and_creates_nothing() -> None:
    store = FakeStore()
    first = await _save(store).create(TENANT, _new(), request_id=_rid("r-1", "welcome"))
    store.calls.clear()
    # Made afresh this would now fail its reference check; the retry gets the first answer.
    retry = _new(html_body='{% extends "gone" %}')
    assert await _save(store).create(TENANT, retry, request_id=_rid("r-1", "welcome")) == first
    assert store.calls == ["replay"] and len(store.created) == 1


async def test_a_request_id_reused_for_another_template_is_refused_before_any_check() -> None:
    store = FakeStore()
    await _save(store).create(TENANT, _new(), request_id=_rid("r-1", "welcome"))
    store.calls.clear()
    with pytest.raises(AlreadyExists) as caught:
        await _save(store).create(TENANT, _new("other"), request_id=_rid("r-1", "other"))
    assert caught.value.field == "request_id"
    assert store.calls == ["replay"] and len(store.created) == 1


async def test_an_update_of_a_missing_template_is_not_found_before_anything_is_checked() -> None:
    store = FakeStore()
    change = TemplateChange("nowhere", ["html_body"], TemplateFields(html_body="{{ oops"))
    with pytest.raises(NotFound):
        await _save(store).update(TENANT, change)
    assert store.calls == ["get"]


async def test_an_update_naming_an_unwritable_field_is_refused_before_the_lookup() -> None:
    store = FakeStore({"welcome": stored("welcome")})
    change = TemplateChange("welcome", ["name", "kind"], TemplateFields())
    with pytest.raises(InvalidArgument) as caught:
        await _save(store).update(TENANT, change)
    assert _fields(caught.value.violations) == ["update_mask", "update_mask"]
    assert store.calls == []


async def test_an_update_merges_the_named_fields_and_adds_a_version() -> None:
    store = FakeStore({"welcome": stored("welcome", text_body="old text")})
    change = TemplateChange(
        "welcome",
        ["html_body"],
        TemplateFields(html_body="<b>{{ name }}</b>", text_body="ignored"),
        draft=True,
    )
    made = await _save(store).update(TENANT, change)
    assert store.calls == ["get", "add_version"]
    assert store.added == [("id-welcome", {"html_body": "<b>{{ name }}</b>"}, (), True)]
    assert made.version == 2 and made.text_body == "old text" and made.draft


async def test_an_update_whose_merge_breaks_the_rules_adds_no_version() -> None:
    store = FakeStore({"welcome": stored("welcome", text_body="")})
    change = TemplateChange("welcome", ["html_body"], TemplateFields(html_body=""))
    with pytest.raises(InvalidArgument) as caught:
        await _save(store).update(TENANT, change)
    assert _fields(caught.value.violations) == ["template.html_body"]
    assert store.calls == ["get"]


async def test_an_update_that_would_make_a_cycle_adds_no_version() -> None:
    store = FakeStore(
        {
            "mid": stored("mid", kind=Kind.PARTIAL, html_body='{% include "foot" %}', refs=("foot",)),
            "foot": stored("foot", kind=Kind.PARTIAL, html_body="<p>foot</p>"),
        }
    )
    change = TemplateChange("foot", ["html_body"], TemplateFields(html_body='{% include "mid" %}'))
    with pytest.raises(InvalidArgument) as caught:
        await _save(store).update(TENANT, change)
    assert caught.value.violations == [("template", "includes itself: foot -> mid -> foot")]
    assert store.calls == ["get", "dependency_graph"]
