"""The fault runner's verdicts: what fails a scenario, and what its load client retries."""

from __future__ import annotations

from collections import Counter

import grpc
import pytest
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from bench.chaos import DEFER_DIRECTIVE, HOLD_DIRECTIVE, Call, Outcome, Scenario, reconcile, retry_delay

KILL_ROUTER = Scenario("kill -9 router", "kill", "router")
KILL_WORKER = Scenario('kill -9 mta_worker during held "."', "kill", "mta_worker", HOLD_DIRECTIVE, 10)


def outcome(scenario: Scenario, *calls: Call, past_dot: int | None = None) -> Outcome:
    done = Outcome(scenario, list(calls), fault_start=100.0, fault_end=105.0, past_dot=past_dot)
    done.states = {c.message_id: ("routed", ("delivered",)) for c in calls if c.message_id}
    return done


def accepted(n: int, kind: str = "other") -> Call:
    return Call(
        key=f"k{n}", kind=kind, started=101.0, codes=["OK"], seconds=0.1, answered=101.1, message_id=f"m{n}"
    )


def test_every_message_once_passes() -> None:
    row = reconcile(
        outcome(KILL_ROUTER, accepted(1), accepted(2)), Counter(m1=1, m2=1), {"m1": 106.0, "m2": 107.0}
    )
    assert (row.accepted, row.delivered, row.lost, row.duplicates, row.failures) == (2, 2, 0, 0, [])
    assert row.recovery == pytest.approx(2.0)  # fault end 105 → the last of the backlog at 107


def test_a_message_never_at_the_sink_is_lost() -> None:
    row = reconcile(outcome(KILL_ROUTER, accepted(1), accepted(2)), Counter(m1=1), {"m1": 106.0})
    assert row.lost == 1 and row.failures == ["1 lost"]


def test_a_message_not_terminal_at_the_bound_is_stuck() -> None:
    done = outcome(KILL_ROUTER, accepted(1))
    done.not_terminal = {"m1"}
    row = reconcile(done, Counter(), {})
    assert row.stuck == 1 and row.lost == 0 and row.failures == ["1 stuck"]


def test_a_duplicate_without_a_worker_stop_fails() -> None:
    row = reconcile(outcome(KILL_ROUTER, accepted(1)), Counter(m1=2), {"m1": 106.0})
    assert row.duplicates == 1 and row.failures == ["1 duplicates without a worker kill"]


def test_worker_stop_duplicates_pass_up_to_the_transactions_past_the_dot() -> None:
    calls = [accepted(1), accepted(2)]
    within = reconcile(
        outcome(KILL_WORKER, *calls, past_dot=2), Counter(m1=2, m2=2), {"m1": 106.0, "m2": 106.0}
    )
    assert within.duplicates == 2 and within.failures == []
    beyond = reconcile(
        outcome(KILL_WORKER, *calls, past_dot=1), Counter(m1=2, m2=2), {"m1": 106.0, "m2": 106.0}
    )
    assert beyond.failures == ['2 duplicates > 1 transactions past "." at the kill']


def test_internal_or_unknown_answers_fail_even_when_a_retry_succeeded() -> None:
    call = accepted(1)
    call.codes = ["INTERNAL", "OK"]
    row = reconcile(outcome(KILL_ROUTER, call), Counter(m1=1), {"m1": 106.0})
    assert row.failures == ["1 INTERNAL/UNKNOWN answers"]


def test_deferred_recipients_must_expire_and_never_arrive() -> None:
    scenario = Scenario("destination defers everything", "defer", directive=DEFER_DIRECTIVE, every=2)
    done = outcome(scenario, accepted(1, DEFER_DIRECTIVE), accepted(2))
    done.states["m1"] = ("routed", ("expired",))
    row = reconcile(done, Counter(m2=1), {"m2": 106.0})
    assert (row.delivered, row.expired, row.failures) == (1, 1, [])
    done.states["m1"] = ("routed", ("delivered",))
    assert reconcile(done, Counter(m1=1, m2=1), {"m1": 106.0, "m2": 106.0}).mismatched == 1


def test_a_delivered_state_without_a_receipt_is_lost() -> None:
    row = reconcile(outcome(KILL_ROUTER, accepted(1)), Counter(), {})
    assert row.lost == 1


class _Rpc(grpc.aio.AioRpcError):
    def __init__(self, code: grpc.StatusCode, retry_after: float | None = None) -> None:
        trailers: tuple[tuple[str, bytes], ...] = ()
        if retry_after is not None:
            detail = any_pb2.Any()
            detail.Pack(
                error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=int(retry_after)))
            )
            status = status_pb2.Status(code=code.value[0], message="m", details=[detail])
            trailers = (("grpc-status-details-bin", status.SerializeToString()),)
        super().__init__(code, grpc.aio.Metadata(), grpc.aio.Metadata(*trailers), "m")


def test_the_load_client_retries_only_unavailable_and_exhausted_with_retry_info() -> None:
    assert code_pb2.UNAVAILABLE == grpc.StatusCode.UNAVAILABLE.value[0]
    assert retry_delay(_Rpc(grpc.StatusCode.UNAVAILABLE), 0) == pytest.approx(0.2)
    assert retry_delay(_Rpc(grpc.StatusCode.UNAVAILABLE, retry_after=1), 0) == pytest.approx(1.0)
    assert retry_delay(_Rpc(grpc.StatusCode.RESOURCE_EXHAUSTED, retry_after=2), 0) == pytest.approx(2.0)
    assert retry_delay(_Rpc(grpc.StatusCode.RESOURCE_EXHAUSTED), 0) is None
    for code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED):
        assert retry_delay(_Rpc(code), 0) is None


def test_other_mail_under_a_flood_is_compared_with_the_same_run_before_it() -> None:
    scenario = Scenario("destination tarpits", "tarpit", directive="slow3", every=2)
    before, during = accepted(1), accepted(2)
    before.started, before.answered = 99.0, 99.0
    during.started, during.answered = 101.0, 101.0
    row = reconcile(outcome(scenario, before, during), Counter(m1=1, m2=1), {"m1": 99.5, "m2": 105.0})
    assert row.baseline_p99 == pytest.approx(0.5)
    assert row.other_p99 == pytest.approx(4.0)
