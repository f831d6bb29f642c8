"""Stream cursors and type filters: what a client may send back, and what it may not."""

from __future__ import annotations

import base64

import pytest
from postwire.v1 import event_pb2, event_service_pb2

from libs.errors import InvalidArgument
from libs.page_tokens import PageTokens
from libs.token_keys import KeyRing
from services.events.filters import event_types
from services.events.stream_cursor import StreamCursors, stream_filters

RING = KeyRing.parse(f"k1:{base64.b64encode(b'k' * 32).decode()}")
ACCEPTED = event_pb2.EVENT_TYPE_ACCEPTED


def _filters(**fields: object) -> str:
    return stream_filters(event_service_pb2.StreamEventsRequest(**fields))  # type: ignore[arg-type]


def _refused(cursors: StreamCursors, token: str, *, caller: str = "t1", filters: str = "") -> None:
    with pytest.raises(InvalidArgument) as caught:
        cursors.open(token, caller=caller, filters=filters or _filters(types=[ACCEPTED]))
    assert [field for field, _ in caught.value.violations] == ["cursor"]


def test_a_cursor_opens_to_its_position_for_the_same_caller_and_filters() -> None:
    cursors = StreamCursors(RING)
    filters = _filters(types=[ACCEPTED])
    token = cursors.seal(42, caller="t1", filters=filters)
    assert cursors.open(token, caller="t1", filters=filters) == 42


def test_start_time_is_not_part_of_the_filters_a_cursor_continues() -> None:
    start = event_service_pb2.StreamEventsRequest(types=[ACCEPTED])
    start.start_time.FromSeconds(1_700_000_000)
    assert stream_filters(start) == _filters(types=[ACCEPTED], cursor="anything")


def test_every_wrong_cursor_is_invalid_argument_on_cursor() -> None:
    cursors = StreamCursors(RING)
    token = cursors.seal(42, caller="t1", filters=_filters(types=[ACCEPTED]))
    _refused(cursors, token, caller="t2")
    _refused(cursors, token, filters=_filters(types=[event_pb2.EVENT_TYPE_DELIVERED]))
    _refused(cursors, token[:-2] + ("AA" if not token.endswith("AA") else "BB"))
    _refused(cursors, "42")
    _refused(cursors, "")
    # A ListEvents page token is sealed for another purpose.
    page = PageTokens(RING).cursor(event_service_pb2.ListEventsRequest(), caller="t1").seal("42")
    _refused(cursors, page)


def test_every_event_type_is_a_filter_and_unknown_numbers_are_not() -> None:
    reserved = [event_pb2.EVENT_TYPE_OPENED, event_pb2.EVENT_TYPE_CLICKED, event_pb2.EVENT_TYPE_UNSUBSCRIBED]
    new = [event_pb2.EVENT_TYPE_COMPLAINED, event_pb2.EVENT_TYPE_WEBHOOK_DISABLED]
    assert event_types(new + reserved) == new + reserved
    for bad in ([0], [99], [ACCEPTED, 14]):
        with pytest.raises(InvalidArgument) as caught:
            event_types(bad)
        assert [field for field, _ in caught.value.violations] == ["types"]
