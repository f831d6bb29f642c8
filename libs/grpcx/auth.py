"""Bearer API keys from call metadata, resolved through the policy service with a short cache."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

import grpc
from opentelemetry import trace
from postwire.internal.v1 import policy_service_pb2, policy_service_pb2_grpc

from libs.errors import PermissionDenied, Unauthenticated
from libs.grpcx.context import Context
from libs.grpcx.status import error_from_rpc

__all__ = ["Caller", "Context", "KeyResolver", "bearer_token", "tag_span"]


def bearer_token(context: Context) -> str:
    """The API key from `authorization: Bearer <key>`; UNAUTHENTICATED if absent or malformed."""
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            scheme, _, token = str(value).partition(" ")
            token = token.strip()
            if scheme.lower() == "bearer" and token:
                return token
            break
    raise Unauthenticated("missing or malformed 'authorization: Bearer <api key>' metadata")


def tag_span(tenant_id: str, key_prefix: str) -> None:
    """Name the caller on the current span: the tenant and the key's public prefix, never the key."""
    span = trace.get_current_span()
    span.set_attribute("postwire.tenant_id", tenant_id)
    span.set_attribute("postwire.api_key.prefix", key_prefix)


@dataclass(frozen=True, slots=True)
class Caller:
    tenant_id: str
    scopes: frozenset[str]
    key_prefix: str

    def require(self, scope: str) -> None:
        if scope not in self.scopes:
            raise PermissionDenied(f"this API key lacks the '{scope}' scope")


class KeyResolver:
    """Authenticates keys via the policy service; positive answers are cached briefly.

    Staleness is bounded by `ttl` (a revoked key works at most that long on this replica);
    failures are never cached, so a fresh key works at once.
    """

    def __init__(self, channel: grpc.aio.Channel, *, ttl: float = 5.0, max_entries: int = 10_000) -> None:
        self._stub = policy_service_pb2_grpc.PolicyServiceStub(channel)
        self._ttl = ttl
        self._max = max_entries
        self._cache: dict[bytes, tuple[float, Caller]] = {}

    async def authorize(self, context: Context, scope: str) -> Caller:
        """The opening of every tenant RPC: who is calling, and may they do this?"""
        caller = await self.resolve(context)
        caller.require(scope)
        return caller

    async def resolve(self, context: Context) -> Caller:
        token = bearer_token(context)
        # Keyed by digest so the cache never holds key material.
        digest = hashlib.sha256(token.encode()).digest()
        hit = self._cache.get(digest)
        now = time.monotonic()
        if hit is not None and hit[0] > now:
            tag_span(hit[1].tenant_id, hit[1].key_prefix)
            return hit[1]
        try:
            answer = await self._stub.Authenticate(
                policy_service_pb2.AuthenticateRequest(api_key=token), timeout=5, wait_for_ready=True
            )
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc, what="policy service") from None
        caller = Caller(answer.tenant_id, frozenset(answer.scopes), answer.key_prefix)
        tag_span(caller.tenant_id, caller.key_prefix)
        if len(self._cache) >= self._max:
            self._cache.clear()
        self._cache[digest] = (now + self._ttl, caller)
        return caller
