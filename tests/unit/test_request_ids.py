"""Request ids and idempotency keys: one rule for what they may be, and what "same request" means."""

from __future__ import annotations

import pytest
from postwire.v1 import template_pb2, template_service_pb2

from libs.errors import InvalidArgument
from libs.request_ids import MAX_KEY_LENGTH, RequestId, fingerprint, key_problem


@pytest.mark.parametrize("key", ["a", "4b1c2d3e-aaaa-bbbb-cccc-000000000000", "x" * MAX_KEY_LENGTH, "with space"])
def test_keys_callers_use_are_accepted(key: str) -> None:
    assert key_problem(key) == ""


@pytest.mark.parametrize(
    ("key", "problem"),
    [("x" * (MAX_KEY_LENGTH + 1), "at most 256 characters"), ("é", "printable ASCII"), ("a\nb", "printable ASCII")],
)
def test_bad_keys_are_named(key: str, problem: str) -> None:
    assert problem in key_problem(key)


def _create(name: str, request_id: str) -> template_service_pb2.CreateTemplateRequest:
    return template_service_pb2.CreateTemplateRequest(
        template=template_pb2.Template(name=name, subject="s", text_body="t"), request_id=request_id
    )


def test_the_fingerprint_ignores_the_id_and_nothing_else() -> None:
    assert fingerprint(_create("a", "1")) == fingerprint(_create("a", "2"))
    assert fingerprint(_create("a", "1")) != fingerprint(_create("b", "1"))


def test_request_id_of_a_request() -> None:
    assert RequestId.of("t1", "CreateTemplate", _create("a", "")) is None
    rid = RequestId.of("t1", "CreateTemplate", _create("a", "r-1"))
    assert rid is not None and (rid.owner, rid.method, rid.value) == ("t1", "CreateTemplate", "r-1")
    with pytest.raises(InvalidArgument) as caught:
        RequestId.of("t1", "CreateTemplate", _create("a", "\x00"))
    assert caught.value.violations[0][0] == "request_id"
