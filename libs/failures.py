"""One answer to "is this failure a dependency that is down?", for every service and worker.

A caller that gets UNAVAILABLE retries (gRPC guidance); one that gets INTERNAL gives up. So the
line between the two must be drawn in one place: servicers map a dependency failure to
UNAVAILABLE, and retry bookkeeping (bus consumers, sweepers) does not count it as the message's
fault. Everything not listed here is a bug until shown otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
import grpc
import nats.errors
import nats.js.errors

from libs.errors import Unavailable
from libs.grpcx.overload import overload_retry_after

__all__ = ["Dependency", "dependency_failure", "is_dependency_unavailable"]

# asyncpg: class 08 (connection exception, incl. "connection does not exist"), server shutting
# down or starting up (57P01-57P03), out of connections or resources (53xxx), and a standby that
# refuses writes during a fail-over (25006).
_DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.exceptions.ReadOnlySQLTransactionError,
    # The client side of a lost connection: "pool is closed", "connection is closed", "cannot
    # perform operation: another operation is in progress" after the socket died mid-query.
    asyncpg.exceptions.InterfaceError,
    # The protocol's state machine after the server ended the connection under a query:
    # "cannot switch to state 11; another operation (2) is in progress" (seen in fault runs).
    asyncpg.exceptions.InternalClientError,
)

_BUS_ERRORS: tuple[type[BaseException], ...] = (
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionDrainingError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.NoServersError,
    nats.errors.StaleConnectionError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.FlushTimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.TimeoutError,
    nats.js.errors.NoStreamResponseError,
    nats.js.errors.ServiceUnavailableError,
)

_PEER_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


@dataclass(frozen=True, slots=True)
class Dependency:
    """Which dependency failed; `message` is safe to show a caller."""

    message: str
    retry_after: float = 1.0

    def as_error(self) -> Unavailable:
        return Unavailable(self.message, retry_after=self.retry_after)


def _classify_one(exc: BaseException) -> Dependency | None:
    if isinstance(exc, Unavailable):
        return Dependency(exc.message, exc.retry_after)
    if isinstance(exc, _DATABASE_ERRORS):
        return Dependency("database unavailable")
    if isinstance(exc, _BUS_ERRORS):
        return Dependency("message bus unavailable")
    if isinstance(exc, grpc.aio.AioRpcError) and exc.code() in _PEER_CODES:
        return Dependency("a Postwire service is unavailable")
    if isinstance(exc, grpc.aio.AioRpcError):
        # A peer past its in-flight limit (libs.grpcx.overload) is busy, not refusing the work.
        delay = overload_retry_after(exc)
        if delay is not None:
            return Dependency("a Postwire service is overloaded", delay)
    # Refused, reset, broken pipe, and time-outs of socket operations (asyncio.TimeoutError is
    # TimeoutError, an OSError): all say the other end is not answering, not that we are wrong.
    if isinstance(exc, OSError):
        return Dependency("a dependency is unavailable")
    return None


def dependency_failure(exc: BaseException) -> Dependency | None:
    """The dependency that is down if `exc` (or what it was raised from) says one is; else None.

    Only explicit causes (`raise … from`) are followed: an unrelated bug raised while handling a
    connection error must still be reported as a bug.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        found = _classify_one(current)
        if found is not None:
            return found
        current = current.__cause__
    return None


def is_dependency_unavailable(exc: BaseException) -> bool:
    return dependency_failure(exc) is not None
