"""StreamEvents cursors: the position of one stored event (its `seq`), sealed with the token key
ring and bound to the caller and the stream's filters; pure.

A cursor has no expiry: a client may come back after any outage, and the position stays
meaningful for as long as the event is stored. It stops opening when its key leaves the ring.
"""

from __future__ import annotations

import hashlib
import json

from postwire.v1 import event_service_pb2

from libs.errors import InvalidArgument
from libs.token_keys import KeyRing, TokenInvalid

__all__ = ["INVALID_CURSOR", "StreamCursors", "stream_filters"]

# Apart from page tokens: a ListEvents page token is never a stream cursor, nor the reverse.
PURPOSE = "event_stream_cursor"
INVALID_CURSOR = "cursor is invalid, another caller's or from a stream with other filters"
_BIGINT_MAX = 2**63 - 1


def stream_filters(request: event_service_pb2.StreamEventsRequest) -> str:
    """sha256 of the filters a cursor continues: every field but `cursor` and `start_time` (the
    start only says where the first stream began; its cursors resume without it)."""
    filters = event_service_pb2.StreamEventsRequest()
    filters.CopyFrom(request)
    filters.ClearField("cursor")
    filters.ClearField("start_time")
    return hashlib.sha256(filters.SerializeToString(deterministic=True)).hexdigest()


def _invalid() -> InvalidArgument:
    return InvalidArgument([("cursor", INVALID_CURSOR)])


class StreamCursors:
    def __init__(self, ring: KeyRing) -> None:
        self._ring = ring

    def seal(self, seq: int, *, caller: str, filters: str) -> str:
        payload = json.dumps({"s": seq, "c": caller, "f": filters}, separators=(",", ":"))
        return self._ring.seal(PURPOSE, payload.encode())

    def open(self, token: str, *, caller: str, filters: str) -> int:
        """The seq the stream resumes after; INVALID_ARGUMENT on `cursor` for every way a cursor
        can be wrong, with one answer so it is no oracle."""
        try:
            fields = json.loads(self._ring.open(PURPOSE, token))
        except (TokenInvalid, ValueError):
            raise _invalid() from None
        if not isinstance(fields, dict):
            raise _invalid()
        seq = fields.get("s")
        if (
            not isinstance(seq, int)
            or isinstance(seq, bool)
            or not 0 <= seq <= _BIGINT_MAX
            or fields.get("c") != caller
            or fields.get("f") != filters
        ):
            raise _invalid()
        return seq
