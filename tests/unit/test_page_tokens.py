"""Sealed page tokens: bound to caller, filters and method, expiring after 24 h, refused alike."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf.message import Message
from postwire.v1 import (
    admin_service_pb2,
    domain_service_pb2,
    event_pb2,
    event_service_pb2,
    template_service_pb2,
)

from libs.errors import InvalidArgument
from libs.page_tokens import INVALID_PAGE_TOKEN, PageTokens, filters_digest
from libs.token_keys import KeyRing

RING = KeyRing.parse(f"k1:{base64.b64encode(b'k' * 32).decode()}")
T0 = datetime(2026, 1, 1, tzinfo=UTC)
REFUSED = [("page_token", INVALID_PAGE_TOKEN)]


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def _next_token(pages: PageTokens, request: Message, caller: str = "tenant-a", position: str = "n1") -> str:
    _, token = pages.cursor(request, caller=caller).page(["n0", position, "n2"], 2, lambda row: row)
    assert token
    return token


def _with_token(request: Message, token: str, **fields: object) -> Message:
    copy = type(request)()
    copy.CopyFrom(request)
    copy.page_token = token  # type: ignore[attr-defined]
    for name, value in fields.items():
        setattr(copy, name, value)
    return copy


def _refused(pages: PageTokens, request: Message, caller: str = "tenant-a") -> list[tuple[str, str]]:
    with pytest.raises(InvalidArgument) as caught:
        pages.cursor(request, caller=caller)
    return caught.value.violations


def test_a_token_continues_the_listing_it_came_from() -> None:
    pages = PageTokens(RING)
    request = template_service_pb2.ListTemplatesRequest(name_prefix="a", page_size=2)
    first = pages.cursor(request, caller="tenant-a")
    assert first.after == "" and first.parse(int) is None
    page, token = first.page(["a1", "a2", "a3"], 2, lambda row: row)
    assert list(page) == ["a1", "a2"]
    # page_size is not a filter: a different size may follow.
    assert pages.cursor(_with_token(request, token, page_size=50), caller="tenant-a").after == "a2"


def test_the_last_page_has_no_token() -> None:
    cursor = PageTokens(RING).cursor(template_service_pb2.ListTemplatesRequest(), caller="t")
    assert cursor.page(["a", "b"], 2, lambda row: row) == (["a", "b"], "")


def test_the_position_is_not_readable_in_the_token() -> None:
    token = _next_token(PageTokens(RING), event_service_pb2.ListEventsRequest(), position="123456789")
    raw = base64.urlsafe_b64decode(token.split(".", 1)[1] + "==")
    assert b"123456789" not in raw and b"tenant-a" not in raw


def test_tokens_expire_after_24_hours() -> None:
    clock = Clock()
    pages = PageTokens(RING, now=clock)
    request = event_service_pb2.ListEventsRequest()
    token = _next_token(pages, request)
    clock.now = T0 + timedelta(hours=24) - timedelta(seconds=1)
    assert pages.cursor(_with_token(request, token), caller="tenant-a").after == "n1"
    clock.now = T0 + timedelta(hours=24)
    assert _refused(pages, _with_token(request, token)) == REFUSED


def test_another_callers_token_is_refused() -> None:
    pages = PageTokens(RING)
    request = domain_service_pb2.ListDomainsRequest()
    token = _next_token(pages, request, caller="tenant-a")
    assert _refused(pages, _with_token(request, token), caller="tenant-b") == REFUSED


@pytest.mark.parametrize(
    "other",
    [
        {"recipient": "x@example.com"},
        {"message_id": "00000000-0000-0000-0000-000000000001"},
    ],
)
def test_a_token_reused_with_other_filters_is_refused(other: dict[str, str]) -> None:
    pages = PageTokens(RING)
    request = event_service_pb2.ListEventsRequest(types=[event_pb2.EVENT_TYPE_ACCEPTED])
    token = _next_token(pages, request)
    assert _refused(pages, _with_token(request, token, **other)) == REFUSED


def test_repeated_and_message_filters_count_too() -> None:
    base = event_service_pb2.ListEventsRequest(types=[event_pb2.EVENT_TYPE_ACCEPTED])
    more = event_service_pb2.ListEventsRequest(
        types=[event_pb2.EVENT_TYPE_ACCEPTED, event_pb2.EVENT_TYPE_DELIVERED]
    )
    later = event_service_pb2.ListEventsRequest(types=[event_pb2.EVENT_TYPE_ACCEPTED])
    later.start_time.FromSeconds(1)
    assert len({filters_digest(base), filters_digest(more), filters_digest(later)}) == 3
    assert filters_digest(base) == filters_digest(_with_token(base, "x", page_size=7))


def test_a_token_from_another_list_method_with_the_same_fields_is_refused() -> None:
    pages = PageTokens(RING)
    token = _next_token(pages, domain_service_pb2.ListDomainsRequest(), caller="admin")
    assert _refused(pages, admin_service_pb2.ListTenantsRequest(page_token=token), caller="admin") == REFUSED


def test_rotation_keeps_tokens_in_flight_until_the_old_key_is_removed() -> None:
    old_ring = RING
    new_key = f"k2:{base64.b64encode(b'n' * 32).decode()}"
    request = template_service_pb2.ListTemplatesRequest()
    token = _next_token(PageTokens(old_ring), request)
    rotated = PageTokens(KeyRing.parse(f"{new_key},k1:{base64.b64encode(b'k' * 32).decode()}"))
    assert rotated.cursor(_with_token(request, token), caller="tenant-a").after == "n1"
    assert _next_token(rotated, request).startswith("k2.")
    retired = PageTokens(KeyRing.parse(new_key))
    assert _refused(retired, _with_token(request, token)) == REFUSED


def test_a_token_sealed_for_another_purpose_is_refused() -> None:
    pages = PageTokens(RING)
    request = template_service_pb2.ListTemplatesRequest()
    sealed = _next_token(pages, request)
    payload = RING.open("page_token", sealed)
    assert _refused(pages, _with_token(request, RING.seal("unsubscribe", payload))) == REFUSED


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"[]",
        b'{"p":1}',
        b'{"p":"","c":"tenant-a"}',
        b'{"p":"n1","c":"tenant-a","f":"x","e":"soon"}',
    ],
)
def test_sealed_but_malformed_payloads_are_refused(payload: bytes) -> None:
    pages = PageTokens(RING)
    request = template_service_pb2.ListTemplatesRequest()
    assert _refused(pages, _with_token(request, RING.seal("page_token", payload))) == REFUSED


def test_a_position_the_query_cannot_take_is_refused_alike() -> None:
    pages = PageTokens(RING)
    request = event_service_pb2.ListEventsRequest()
    token = _next_token(pages, request, position="9" * 40)
    cursor = pages.cursor(_with_token(request, token), caller="tenant-a")
    with pytest.raises(InvalidArgument) as caught:
        cursor.parse(lambda p: int(p) if int(p) < 2**63 else int("overflow"))
    assert caught.value.violations == REFUSED
    assert str(caught.value) == f"page_token: {INVALID_PAGE_TOKEN}"
