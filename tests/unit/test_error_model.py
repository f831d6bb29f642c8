"""The error model's one classifier and the status every exception becomes (pure)."""

from __future__ import annotations

import logging

import asyncpg
import grpc
import nats.errors
import nats.js.errors
import pytest
from google.rpc import code_pb2, error_details_pb2, status_pb2
from opentelemetry.sdk.trace import TracerProvider

from libs.errors import InvalidArgument, NotFound, PostwireError, Unavailable
from libs.failures import dependency_failure, is_dependency_unavailable
from libs.grpcx.status import status_for

DOWN = [
    ConnectionRefusedError(111, "refused"),
    ConnectionResetError(104, "reset"),
    BrokenPipeError(),
    TimeoutError(),
    asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
    asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
    asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command"),
    asyncpg.exceptions.CrashShutdownError("crash"),
    asyncpg.exceptions.TooManyConnectionsError("too many"),
    asyncpg.exceptions.ReadOnlySQLTransactionError("read-only"),
    asyncpg.exceptions.InterfaceError("pool is closed"),
    asyncpg.exceptions.InternalClientError("cannot switch to state 11; another operation (2) is in progress"),
    nats.errors.ConnectionClosedError(),
    nats.errors.NoServersError(),
    nats.errors.TimeoutError(),
    nats.js.errors.NoStreamResponseError(),
    Unavailable("message bus unavailable"),
]

BUGS = [
    ValueError("x"),
    KeyError("k"),
    AssertionError(),
    asyncpg.exceptions.UndefinedColumnError("column does not exist"),
    asyncpg.exceptions.UniqueViolationError("duplicate"),
    asyncpg.exceptions.DataError("bad"),
    nats.js.errors.BadRequestError(),
]


class _PeerError(grpc.aio.AioRpcError):
    def __init__(self, code: grpc.StatusCode) -> None:
        super().__init__(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details="peer")


@pytest.mark.parametrize("exc", DOWN, ids=lambda e: type(e).__name__)
def test_dependency_failures_are_unavailable(exc: BaseException) -> None:
    assert is_dependency_unavailable(exc)
    status = status_for(exc)
    assert status.code == grpc.StatusCode.UNAVAILABLE
    details = _details(status)
    assert error_details_pb2.RetryInfo.DESCRIPTOR.full_name in details


@pytest.mark.parametrize("exc", BUGS, ids=lambda e: type(e).__name__)
def test_other_failures_are_bugs(exc: BaseException) -> None:
    assert not is_dependency_unavailable(exc)
    assert status_for(exc).code == grpc.StatusCode.INTERNAL


@pytest.mark.parametrize(
    ("code", "down"),
    [
        (grpc.StatusCode.UNAVAILABLE, True),
        (grpc.StatusCode.DEADLINE_EXCEEDED, True),
        (grpc.StatusCode.INTERNAL, False),
        (grpc.StatusCode.INVALID_ARGUMENT, False),
    ],
)
def test_a_peer_that_does_not_answer_is_a_dependency_down(code: grpc.StatusCode, down: bool) -> None:
    assert is_dependency_unavailable(_PeerError(code)) is down


def test_an_explicit_cause_is_followed_but_not_an_unrelated_context() -> None:
    try:
        try:
            raise ConnectionResetError()
        except ConnectionResetError as lost:
            raise RuntimeError("wrapped") from lost
    except RuntimeError as wrapped:
        assert dependency_failure(wrapped) is not None
    try:
        try:
            raise ConnectionResetError()
        except ConnectionResetError:
            raise KeyError("a bug while handling it")  # noqa: B904
    except KeyError as bug:
        assert dependency_failure(bug) is None


def test_domain_errors_keep_their_code() -> None:
    assert status_for(InvalidArgument([("to", "bad")])).code == grpc.StatusCode.INVALID_ARGUMENT
    assert status_for(NotFound("no")).code == grpc.StatusCode.NOT_FOUND


def test_internal_carries_the_trace_id_in_the_message_error_info_and_log(caplog: pytest.LogCaptureFixture) -> None:
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("call") as span, caplog.at_level(logging.ERROR):
        status = status_for(ValueError("SELECT secret FROM tenants"))
    trace_id = format(span.get_span_context().trace_id, "032x")
    assert status.code == grpc.StatusCode.INTERNAL
    decoded = _status(status)
    assert trace_id in decoded.message
    assert "SELECT" not in decoded.message and "ValueError" not in decoded.message
    infos = [d for d in decoded.details if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR)]
    assert len(infos) == 1
    info = error_details_pb2.ErrorInfo()
    infos[0].Unpack(info)
    assert info.metadata["trace_id"] == trace_id
    assert any(trace_id in r.getMessage() and r.exc_info for r in caplog.records)


def test_internal_without_a_trace_still_gives_an_id_to_quote(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR):
        decoded = _status(status_for(PostwireError("peer failed")))
    assert decoded.code == code_pb2.INTERNAL
    info = error_details_pb2.ErrorInfo()
    decoded.details[0].Unpack(info)
    assert len(info.metadata["trace_id"]) == 32
    assert any(info.metadata["trace_id"] in r.getMessage() for r in caplog.records)


def _status(status: grpc.Status) -> status_pb2.Status:
    for key, value in status.trailing_metadata:
        if key == "grpc-status-details-bin":
            return status_pb2.Status.FromString(value)
    raise AssertionError("no details")


def _details(status: grpc.Status) -> set[str]:
    return {d.TypeName() for d in _status(status).details}


def _refused(status: grpc.Status) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        status.code,
        grpc.aio.Metadata(),
        grpc.aio.Metadata(*status.trailing_metadata),
        details=status.details,
    )


def test_a_peer_that_sheds_load_is_a_dependency_to_retry_but_a_tenant_limit_is_not() -> None:
    from libs.errors import RateLimited
    from libs.grpcx.overload import overloaded_status
    from libs.grpcx.status import error_from_rpc, to_status

    shed = _refused(overloaded_status("policy", 0.5))
    found = dependency_failure(shed)
    assert found is not None and found.retry_after == 0.5
    mapped = error_from_rpc(shed, what="policy")
    assert isinstance(mapped, Unavailable) and mapped.retry_after == 0.5

    limited = _refused(to_status(RateLimited("slow down", retry_after=2, subject="tenant:t1")))
    assert dependency_failure(limited) is None
    assert isinstance(error_from_rpc(limited, what="policy"), RateLimited)
