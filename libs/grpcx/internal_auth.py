"""The deployment's internal bearer token: required by every postwire.internal.v1 method.

Internal RPCs act for whatever tenant the request names (render its templates, write its
suppressions, admit its mail), so reaching a service's port must not be enough to call them.
Every service that serves or calls them shares POSTWIRE_INTERNAL_TOKEN: servers check it
(constant time, on the server side of every GrpcServer), internal channels attach it. Public
postwire.v1 services, health and reflection are not touched: they carry the caller's own
credential. The edge never forwards internal methods and never attaches this token.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import grpc

__all__ = ["INTERNAL_PREFIX", "InternalAuth", "token_client_interceptors", "token_metadata"]

# Method paths look like "/postwire.internal.v1.PolicyService/Authenticate".
INTERNAL_PREFIX = "/postwire.internal."
_DENIED = "internal RPC without a valid 'authorization: Bearer <POSTWIRE_INTERNAL_TOKEN>'"


def token_metadata(token: str) -> tuple[tuple[str, str], ...]:
    """The call metadata that authorizes an internal call."""
    return (("authorization", f"Bearer {token}"),)


def _digest(value: str) -> bytes:
    # Comparing digests keeps the compare constant-time whatever the presented length.
    return hashlib.sha256(value.encode()).digest()


def _presented(metadata: Any) -> str | None:
    for key, value in metadata or ():
        if key == "authorization":
            scheme, _, token = str(value).partition(" ")
            return token.strip() if scheme.lower() == "bearer" else None
    return None


class InternalAuth:
    """Decides whether a call may reach an internal method; libs.grpcx.server's call layer asks
    it before the method is even looked up, so an unauthenticated caller cannot probe which
    internal methods exist.

    An empty configured token refuses every internal call (fail closed): a service started
    without one can still serve its public API and health.
    """

    def __init__(self, token: str) -> None:
        self._digest = _digest(token) if token else b""
        # Every internal method takes one request message; answering with a unary handler ends a
        # server-streaming call with the same status.
        self.denied: grpc.RpcMethodHandler[Any, Any] = grpc.unary_unary_rpc_method_handler(_deny)

    def allows(self, metadata: Any) -> bool:
        presented = _presented(metadata)
        if not self._digest or not presented:
            return False
        return hmac.compare_digest(_digest(presented), self._digest)

    def admits(self, handler_call_details: grpc.HandlerCallDetails) -> bool:
        """Public methods, health and reflection always; internal ones with the token."""
        if not handler_call_details.method.startswith(INTERNAL_PREFIX):
            return True
        return self.allows(handler_call_details.invocation_metadata)


async def _deny(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> None:
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, _DENIED)


class _Attach:
    def __init__(self, token: str) -> None:
        self._metadata = token_metadata(token)

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(
            *[(k, v) for k, v in (details.metadata or ()) if k != "authorization"], *self._metadata
        )
        return grpc.aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )


class _AttachUnaryUnary(_Attach, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await continuation(self._details(client_call_details), request)


class _AttachUnaryStream(_Attach, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await continuation(self._details(client_call_details), request)


def token_client_interceptors(token: str, *, unary_unary: bool = True) -> list[grpc.aio.ClientInterceptor]:
    """Client interceptors that put the internal token on every call of a channel (streams
    only when the channel's metrics interceptor attaches it to unary calls itself)."""
    return (
        [_AttachUnaryUnary(token), _AttachUnaryStream(token)] if unary_unary else [_AttachUnaryStream(token)]
    )
