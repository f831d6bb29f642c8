"""PolicyService.RecordSuppressions for the suppression relay, with errors as domain errors."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from postwire.internal.v1 import policy_service_pb2, policy_service_pb2_grpc
from postwire.v1 import suppression_service_pb2

from libs.grpcx.status import error_from_rpc
from services.events.suppression_rule import PendingSuppression

__all__ = ["PolicySuppressions"]

# One call carries at most one claim's rows of a tenant (500), far below policy's 10,000.
CALL_TIMEOUT_SECONDS = 10.0


class PolicySuppressions:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = policy_service_pb2_grpc.PolicyServiceStub(channel)

    async def record(self, tenant_id: str, items: Sequence[PendingSuppression]) -> None:
        request = policy_service_pb2.RecordSuppressionsRequest(
            tenant_id=tenant_id,
            suppressions=[
                suppression_service_pb2.Suppression(
                    address=item.address,
                    reason=suppression_service_pb2.SuppressionReason.ValueType(item.reason),
                    source_message_id=item.source_message_id,
                )
                for item in items
            ],
        )
        try:
            await self._stub.RecordSuppressions(request, timeout=CALL_TIMEOUT_SECONDS)
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc, what="policy") from exc
