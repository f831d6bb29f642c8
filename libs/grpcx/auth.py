"""Bearer API keys from call metadata, resolved through the policy service with a short cache."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc
from opentelemetry import trace
from postwire.internal.v1 import policy_service_pb2, policy_service_pb2_grpc

from libs.errors import PermissionDenied, Unauthenticated
from libs.grpcx.context import Context
from libs.grpcx.status import error_from_rpc

__all__ = ["Caller", "Context", "KeyResolver", "bearer_token", "tag_span"]

_log = logging.getLogger(__name__)
# A cached answer this close to its expiry (as a share of the TTL) is refreshed in the background,
# so a key in steady use never waits on Authenticate on a call's path.
_REFRESH_SHARE = 0.2


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

    Staleness is bounded by `ttl` (a revoked key works at most that long on this replica, plus
    one background refresh); failures are never cached, so a fresh key works at once. Concurrent
    calls with an uncached key share one Authenticate round trip, and a key in use is refreshed
    in the background before its answer expires: a SendEmail makes one policy round trip (its
    admission), not two.
    """

    def __init__(
        self,
        channel: grpc.aio.Channel,
        *,
        ttl: float = 5.0,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stub = policy_service_pb2_grpc.PolicyServiceStub(channel)
        self._ttl = ttl
        self._clock = clock
        self._max = max_entries
        self._cache: dict[bytes, tuple[float, Caller]] = {}
        self._lookups: dict[bytes, asyncio.Future[Caller]] = {}
        self._refreshes: set[asyncio.Task[None]] = set()

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
        now = self._clock()
        if hit is not None and hit[0] > now:
            if hit[0] - now < self._ttl * _REFRESH_SHARE and digest not in self._lookups:
                self._refresh(token, digest)
            tag_span(hit[1].tenant_id, hit[1].key_prefix)
            return hit[1]
        caller = await self._lookup(token, digest)
        tag_span(caller.tenant_id, caller.key_prefix)
        return caller

    def _lookup(self, token: str, digest: bytes) -> asyncio.Future[Caller]:
        """The one Authenticate call in flight for this key, started if there is none."""
        pending = self._lookups.get(digest)
        if pending is None:
            pending = asyncio.ensure_future(self._authenticate(token, digest))
            self._lookups[digest] = pending
            pending.add_done_callback(lambda done: self._settled(digest, done))
        # Shielded: a caller that gives up (deadline, cancel) must not cancel the others' answer.
        return asyncio.shield(pending)

    def _settled(self, digest: bytes, done: asyncio.Future[Caller]) -> None:
        self._lookups.pop(digest, None)
        if not done.cancelled():
            # Retrieved here so an answer every waiter gave up on is not reported as lost.
            done.exception()

    async def _authenticate(self, token: str, digest: bytes) -> Caller:
        try:
            answer = await self._stub.Authenticate(
                policy_service_pb2.AuthenticateRequest(api_key=token), timeout=5, wait_for_ready=True
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
                # Revoked: forget the cached answer now rather than at its expiry.
                self._cache.pop(digest, None)
            raise error_from_rpc(exc, what="policy service") from None
        caller = Caller(answer.tenant_id, frozenset(answer.scopes), answer.key_prefix)
        if len(self._cache) >= self._max:
            self._cache.clear()
        self._cache[digest] = (self._clock() + self._ttl, caller)
        return caller

    def _refresh(self, token: str, digest: bytes) -> None:
        task = asyncio.create_task(self._refresh_quietly(token, digest), name="api-key-refresh")
        self._refreshes.add(task)
        task.add_done_callback(self._refreshes.discard)

    async def _refresh_quietly(self, token: str, digest: bytes) -> None:
        try:
            await self._lookup(token, digest)
        except Exception as exc:
            # The entry is gone or expires on time; the next call meets the error itself.
            _log.debug("api key refresh: %s", type(exc).__name__)
