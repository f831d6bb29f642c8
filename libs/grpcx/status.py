"""Domain errors → gRPC status with google.rpc details, and back again for internal calls."""

from __future__ import annotations

import logging
import secrets
from typing import NoReturn

import grpc
from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from opentelemetry import trace

from libs.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    PostwireError,
    RateLimited,
    Unauthenticated,
    Unavailable,
    Unimplemented,
)
from libs.failures import dependency_failure
from libs.grpcx.context import Context
from libs.grpcx.overload import overload_retry_after

__all__ = ["abort_for", "error_from_rpc", "internal_status", "retry_delay", "status_for", "to_status"]

_log = logging.getLogger(__name__)


def _retry_info(seconds: float) -> error_details_pb2.RetryInfo:
    whole = int(seconds)
    return error_details_pb2.RetryInfo(
        retry_delay=duration_pb2.Duration(seconds=whole, nanos=int((seconds - whole) * 1e9))
    )


def to_status(exc: PostwireError) -> grpc.Status:
    """Build the status (code, message, details) a caller sees for a domain error."""
    details = []
    match exc:
        case InvalidArgument():
            code = code_pb2.INVALID_ARGUMENT
            details.append(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
                        for f, d in exc.violations
                    ]
                )
            )
        case Unauthenticated():
            code = code_pb2.UNAUTHENTICATED
        case PermissionDenied():
            code = code_pb2.PERMISSION_DENIED
        case NotFound():
            code = code_pb2.NOT_FOUND
        case AlreadyExists():
            code = code_pb2.ALREADY_EXISTS
            if exc.field:
                details.append(
                    error_details_pb2.BadRequest(
                        field_violations=[
                            error_details_pb2.BadRequest.FieldViolation(
                                field=exc.field, description=exc.message
                            )
                        ]
                    )
                )
            if exc.existing_id:
                details.append(
                    error_details_pb2.ResourceInfo(
                        resource_type="postwire.v1.Message", resource_name=exc.existing_id
                    )
                )
        case FailedPrecondition():
            code = code_pb2.FAILED_PRECONDITION
            if exc.violations:
                details.append(
                    error_details_pb2.PreconditionFailure(
                        violations=[
                            error_details_pb2.PreconditionFailure.Violation(type=t, subject=s, description=d)
                            for t, s, d in exc.violations
                        ]
                    )
                )
        case RateLimited():
            code = code_pb2.RESOURCE_EXHAUSTED
            # No RetryInfo means the same call will never pass (say, more recipients than the burst).
            if exc.retry_after > 0:
                details.append(_retry_info(exc.retry_after))
            details.append(
                error_details_pb2.QuotaFailure(
                    violations=[
                        error_details_pb2.QuotaFailure.Violation(
                            subject=exc.subject, description=exc.description
                        )
                    ]
                )
            )
        case Unavailable():
            code = code_pb2.UNAVAILABLE
            details.append(_retry_info(exc.retry_after))
        case Unimplemented():
            code = code_pb2.UNIMPLEMENTED
        case _:
            code = code_pb2.INTERNAL
    status = status_pb2.Status(code=code, message=exc.message)
    for detail in details:
        status.details.add().Pack(detail)
    return rpc_status.to_status(status)


ERROR_DOMAIN = "postwire.dev"


def _trace_id() -> str:
    """The current trace's id (hex), or a fresh random id when the call is not traced, so the
    caller always has something to quote that appears in exactly one log line."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        return format(context.trace_id, "032x")
    return secrets.token_hex(16)


def internal_status(trace_id: str) -> grpc.Status:
    """INTERNAL for a bug: no detail of the failure, only the id an operator searches the logs for."""
    status = status_pb2.Status(
        code=code_pb2.INTERNAL,
        message=f"internal error (trace id {trace_id}); the operator's logs have the details",
    )
    status.details.add().Pack(
        error_details_pb2.ErrorInfo(reason="INTERNAL", domain=ERROR_DOMAIN, metadata={"trace_id": trace_id})
    )
    return rpc_status.to_status(status)


def status_for(exc: BaseException) -> grpc.Status:
    """The status a caller sees for any exception a servicer raised.

    Domain errors say what they mean; a dependency that is down is UNAVAILABLE (retry); anything
    else is a bug: INTERNAL with the trace id, and the traceback goes to the log only. Never
    str(exc) to the caller: it can carry SQL, paths or other tenants' data.
    """
    if isinstance(exc, PostwireError) and type(exc) is not PostwireError:
        return to_status(exc)
    dependency = dependency_failure(exc)
    if dependency is not None:
        _log.warning("answering UNAVAILABLE: %s (%s)", dependency.message, type(exc).__name__)
        return to_status(dependency.as_error())
    trace_id = _trace_id()
    _log.error("internal error, trace id %s", trace_id, exc_info=exc)
    return internal_status(trace_id)


async def abort_for(context: Context, exc: BaseException) -> NoReturn:
    """Abort the call with the status `status_for` chooses."""
    status = status_for(exc)
    await context.abort(status.code, status.details, status.trailing_metadata)
    raise AssertionError("unreachable")  # context.abort always raises


def retry_delay(exc: grpc.aio.AioRpcError) -> float | None:
    """The google.rpc.RetryInfo delay a failed call carries, in seconds; None without one (or
    with trailers that do not decode)."""
    try:
        status = rpc_status.from_call(exc)  # type: ignore[arg-type]  # the stubs want the sync grpc.Call; an aio error has the same trailers
    except ValueError:
        return None
    for detail in status.details if status else []:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return float(info.retry_delay.ToTimedelta().total_seconds())
    return None


def error_from_rpc(exc: grpc.aio.AioRpcError, *, what: str) -> PostwireError:
    """Translate a failed internal call into the domain error the caller should see."""
    code = exc.code()
    message = exc.details() or what
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED):
        # Carried unchanged when a Postwire peer said it (its RetryInfo is how we know): "database
        # unavailable" with the peer's delay. A transport failure's text names internal addresses,
        # so the caller gets only which service did not answer.
        peer_delay = retry_delay(exc)
        if code == grpc.StatusCode.UNAVAILABLE and peer_delay is not None:
            return Unavailable(message, retry_after=peer_delay)
        return Unavailable(f"{what} unavailable")
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return Unauthenticated(message)
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return PermissionDenied(message)
    if code == grpc.StatusCode.NOT_FOUND:
        return NotFound(message)
    if code == grpc.StatusCode.ALREADY_EXISTS:
        return AlreadyExists(message)
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        preconditions: list[tuple[str, str, str]] = []
        status = rpc_status.from_call(exc)  # type: ignore[arg-type]  # the stubs want the sync grpc.Call; an aio error has the same trailers
        for detail in status.details if status else []:
            if detail.Is(error_details_pb2.PreconditionFailure.DESCRIPTOR):
                failure = error_details_pb2.PreconditionFailure()
                detail.Unpack(failure)
                preconditions += [(v.type, v.subject, v.description) for v in failure.violations]
        return FailedPrecondition(message, violations=preconditions)
    overloaded = overload_retry_after(exc)
    if overloaded is not None:
        # An internal peer is full: for our caller that is a dependency to retry, and the
        # pipeline's retry bookkeeping must not count it against the message.
        return Unavailable(f"{what} overloaded", retry_after=overloaded)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        # Pass the limit's numbers on unchanged: the caller needs the same RetryInfo and QuotaFailure.
        retry_after, subject, description = 0.0, "", ""
        status = rpc_status.from_call(exc)  # type: ignore[arg-type]  # the stubs want the sync grpc.Call; an aio error has the same trailers
        for detail in status.details if status else []:
            if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                info = error_details_pb2.RetryInfo()
                detail.Unpack(info)
                retry_after = info.retry_delay.ToTimedelta().total_seconds()
            elif detail.Is(error_details_pb2.QuotaFailure.DESCRIPTOR):
                quota = error_details_pb2.QuotaFailure()
                detail.Unpack(quota)
                if quota.violations:
                    subject, description = quota.violations[0].subject, quota.violations[0].description
        return RateLimited(message, retry_after=retry_after, subject=subject, description=description)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        violations: list[tuple[str, str]] = []
        status = rpc_status.from_call(exc)  # type: ignore[arg-type]  # the stubs want the sync grpc.Call; an aio error has the same trailers
        for detail in status.details if status else []:
            if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                violations.extend((v.field, v.description) for v in bad.field_violations)
        return InvalidArgument(violations or [("request", message)], message)
    return PostwireError(f"{what} failed")
