"""The opening of policy's own public RPCs, as libs.grpcx.auth.KeyResolver.authorize is for the
other services: policy answers from its own store instead of calling itself."""

from __future__ import annotations

from libs.grpcx.auth import Context, bearer_token, tag_span
from services.policy.authenticate import Authenticator
from services.policy.records import KeyRecord

__all__ = ["LocalKeys"]


class LocalKeys:
    def __init__(self, authenticator: Authenticator) -> None:
        self._authenticator = authenticator

    async def authorize(self, context: Context, scope: str) -> KeyRecord:
        caller = await self._authenticator.authorize(bearer_token(context), scope)
        tag_span(caller.tenant_id, caller.prefix)
        return caller
