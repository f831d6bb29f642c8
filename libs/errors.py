"""Domain errors raised by service cores; one interceptor maps them to gRPC status codes."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "AlreadyExists",
    "FailedPrecondition",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "PostwireError",
    "RateLimited",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "required",
]


class PostwireError(Exception):
    """Base of every error a caller may see. `message` is safe to show to the caller."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(PostwireError):
    """One or more request fields are bad; each violation is (field path, description)."""

    def __init__(self, violations: Sequence[tuple[str, str]], message: str | None = None) -> None:
        self.violations = list(violations)
        first = self.violations[0] if self.violations else ("request", "invalid")
        super().__init__(message or f"{first[0]}: {first[1]}")


class Unauthenticated(PostwireError):
    pass


class PermissionDenied(PostwireError):
    pass


class NotFound(PostwireError):
    pass


class AlreadyExists(PostwireError):
    def __init__(self, message: str, *, field: str = "", existing_id: str = "") -> None:
        super().__init__(message)
        self.field = field
        self.existing_id = existing_id


class FailedPrecondition(PostwireError):
    """The system is not in a state that allows the call. Each violation is (type, subject,
    description), sent as google.rpc.PreconditionFailure."""

    def __init__(self, message: str, *, violations: Sequence[tuple[str, str, str]] = ()) -> None:
        super().__init__(message)
        self.violations = list(violations)


class RateLimited(PostwireError):
    """A limit or quota refused the call. `subject` and `description` become the QuotaFailure;
    `retry_after` (0: retrying the same call will never pass) the RetryInfo."""

    def __init__(self, message: str, *, retry_after: float, subject: str, description: str = "") -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.subject = subject
        self.description = description or message


class Unavailable(PostwireError, ConnectionError):
    """A dependency is down; the caller should retry (with its idempotency key)."""

    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Unimplemented(PostwireError):
    pass


def required(value: str, field: str, description: str) -> str:
    """`value`, or INVALID_ARGUMENT naming `field` when it is empty."""
    if not value:
        raise InvalidArgument([(field, description)])
    return value
