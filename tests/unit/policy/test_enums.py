"""Policy's domain enums are the public protos' values: every proto value has a member, so a
value added to a .proto cannot be silently unknown here."""

from __future__ import annotations

from collections.abc import Iterable
from enum import IntEnum
from typing import Any

import pytest
from postwire.internal.v1 import policy_service_pb2
from postwire.v1 import domain_service_pb2, suppression_service_pb2

from services.policy.admit import Decision
from services.policy.domains import DomainState, Purpose, RecordStatus
from services.policy.suppressions import Reason


def _proto_values(items: Iterable[tuple[str, int]], *, with_unspecified: bool = False) -> dict[str, int]:
    return {name: value for name, value in items if with_unspecified or not name.endswith("_UNSPECIFIED")}


@pytest.mark.parametrize(
    ("ours", "proto", "prefix"),
    [
        (Purpose, domain_service_pb2.DnsRecordPurpose, "DNS_RECORD_PURPOSE_"),
        (DomainState, domain_service_pb2.DomainState, "DOMAIN_STATE_"),
        (Reason, suppression_service_pb2.SuppressionReason, "SUPPRESSION_REASON_"),
        (Decision, policy_service_pb2.Decision, "DECISION_"),
    ],
)
def test_every_proto_value_has_a_member_of_the_same_name(
    ours: type[IntEnum], proto: Any, prefix: str
) -> None:
    assert {prefix + m.name: m.value for m in ours} == _proto_values(proto.items())


def test_record_statuses_cover_the_proto_and_unchecked_is_its_unspecified() -> None:
    values = _proto_values(domain_service_pb2.DnsRecordStatus.items(), with_unspecified=True)
    assert {m.value for m in RecordStatus} == set(values.values())
    assert int(RecordStatus.UNCHECKED) == int(domain_service_pb2.DNS_RECORD_STATUS_UNSPECIFIED)
    for m in RecordStatus:
        if m is not RecordStatus.UNCHECKED:
            assert values["DNS_RECORD_STATUS_" + m.name] == m.value


def test_domain_state_follows_verification() -> None:
    assert DomainState.of(True) is DomainState.VERIFIED
    assert DomainState.of(False) is DomainState.PENDING
