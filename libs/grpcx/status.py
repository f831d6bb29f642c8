"""Domain errors → gRPC status with google.rpc details, and back again for internal calls."""

from __future__ import annotations

import logging
from typing import NoReturn

import grpc
from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

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

__all__ = ["abort_for", "error_from_rpc", "to_status"]

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


async def abort_for(context: grpc.aio.ServicerContext, exc: BaseException) -> NoReturn:
    """Abort the call for any exception; unexpected ones become INTERNAL with a fixed message."""
    if not isinstance(exc, PostwireError):
        # Never str(exc) to the caller: it can carry SQL, paths or other tenants' data.
        _log.error("unexpected error", exc_info=exc)
        exc = PostwireError("internal error; the operator's logs have the details")
    status = to_status(exc)
    await context.abort(status.code, status.details, status.trailing_metadata)
    raise AssertionError("unreachable")  # context.abort always raises


def error_from_rpc(exc: grpc.aio.AioRpcError, *, what: str) -> PostwireError:
    """Translate a failed internal call into the domain error the caller should see."""
    code = exc.code()
    message = exc.details() or what
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED):
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
        status = rpc_status.from_call(exc)  # type: ignore[arg-type]
        for detail in status.details if status else []:
            if detail.Is(error_details_pb2.PreconditionFailure.DESCRIPTOR):
                failure = error_details_pb2.PreconditionFailure()
                detail.Unpack(failure)
                preconditions += [(v.type, v.subject, v.description) for v in failure.violations]
        return FailedPrecondition(message, violations=preconditions)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        # Pass the limit's numbers on unchanged: the caller needs the same RetryInfo and QuotaFailure.
        retry_after, subject, description = 0.0, "", ""
        status = rpc_status.from_call(exc)  # type: ignore[arg-type]
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
        status = rpc_status.from_call(exc)  # type: ignore[arg-type]
        for detail in status.details if status else []:
            if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                violations.extend((v.field, v.description) for v in bad.field_violations)
        return InvalidArgument(violations or [("request", message)], message)
    return PostwireError(f"{what} failed")
