"""postwire.internal.v1.PolicyService: proto ↔ domain, no rules of its own."""

from __future__ import annotations

import grpc
from postwire.internal.v1 import policy_service_pb2, policy_service_pb2_grpc

from libs.errors import InvalidArgument, PermissionDenied, Unauthenticated
from services.policy.api_keys import DEFAULT_SCOPES, generate_key, hash_key
from services.policy.store import KeyRecord, PolicyStore


class PolicyApi(policy_service_pb2_grpc.PolicyServiceServicer):
    def __init__(self, store: PolicyStore, pepper: bytes) -> None:
        self._store = store
        self._pepper = pepper

    async def _lookup(self, api_key: str) -> KeyRecord:
        record = await self._store.find_key(hash_key(api_key, self._pepper)) if api_key else None
        if record is None:
            # One message for unknown, revoked and malformed keys: no oracle for guessing.
            raise Unauthenticated("unknown or revoked API key")
        return record

    async def Authenticate(
        self, request: policy_service_pb2.AuthenticateRequest, context: grpc.aio.ServicerContext
    ) -> policy_service_pb2.AuthenticateResponse:
        record = await self._lookup(request.api_key)
        return policy_service_pb2.AuthenticateResponse(
            tenant_id=record.tenant_id, scopes=record.scopes, key_prefix=record.prefix
        )

    async def AdmitMessage(
        self, request: policy_service_pb2.AdmitMessageRequest, context: grpc.aio.ServicerContext
    ) -> policy_service_pb2.AdmitMessageResponse:
        record = await self._lookup(request.api_key)
        if "send" not in record.scopes:
            raise PermissionDenied("this API key lacks the 'send' scope")
        return policy_service_pb2.AdmitMessageResponse(
            tenant_id=record.tenant_id,
            key_prefix=record.prefix,
            sandbox=record.sandbox,
            decisions=[policy_service_pb2.DECISION_ADMIT] * len(request.recipients),
        )

    async def CreateTenant(
        self, request: policy_service_pb2.CreateTenantRequest, context: grpc.aio.ServicerContext
    ) -> policy_service_pb2.CreateTenantResponse:
        name = request.name.strip()
        if not name or len(name) > 128:
            raise InvalidArgument([("name", "a tenant name of 1-128 characters is required")])
        new = generate_key()
        tenant_id = await self._store.create_tenant(
            name, prefix=new.prefix, key_hash=hash_key(new.key, self._pepper), scopes=DEFAULT_SCOPES
        )
        return policy_service_pb2.CreateTenantResponse(tenant_id=tenant_id, api_key=new.key)
