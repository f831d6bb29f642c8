"""postwire.v1.SuppressionService (public): the tenant's own suppression list."""

from __future__ import annotations

from postwire.v1 import suppression_service_pb2, suppression_service_pb2_grpc

from libs.grpcx.auth import Context
from libs.page_tokens import RECORDS_PAGE_SIZE, PageTokens, page_size
from libs.request_ids import RequestId
from services.policy.local_keys import LocalKeys
from services.policy.manage_suppressions import ManageSuppressions
from services.policy.suppression_protos import entry_inputs, to_proto
from services.policy.suppressions import Entry

P = suppression_service_pb2


def _address_group_position(position: str) -> tuple[str, str]:
    address, sep, group = position.partition("\n")
    if not sep:
        raise ValueError(position)
    return address, group


def _position(e: Entry) -> str:
    return f"{e.address}\n{e.group}"


class SuppressionApi(suppression_service_pb2_grpc.SuppressionServiceServicer):
    def __init__(self, keys: LocalKeys, suppressions: ManageSuppressions, pages: PageTokens) -> None:
        self._keys = keys
        self._suppressions = suppressions
        self._pages = pages

    async def BatchCreateSuppressions(
        self, request: P.BatchCreateSuppressionsRequest, context: Context
    ) -> P.BatchCreateSuppressionsResponse:
        caller = await self._keys.authorize(context, "suppressions:write")
        answer = await self._suppressions.batch_create(
            caller.tenant_id,
            entry_inputs(request.suppressions),
            RequestId.of(caller.tenant_id, "BatchCreateSuppressions", request),
            lambda stored: P.BatchCreateSuppressionsResponse(
                suppressions=[to_proto(e) for e in stored]
            ).SerializeToString(),
        )
        return P.BatchCreateSuppressionsResponse.FromString(answer)

    async def GetSuppression(
        self, request: P.GetSuppressionRequest, context: Context
    ) -> P.GetSuppressionResponse:
        caller = await self._keys.authorize(context, "suppressions:read")
        found = await self._suppressions.get(caller.tenant_id, request.address, request.unsubscribe_group)
        return P.GetSuppressionResponse(suppression=to_proto(found))

    async def ListSuppressions(
        self, request: P.ListSuppressionsRequest, context: Context
    ) -> P.ListSuppressionsResponse:
        caller = await self._keys.authorize(context, "suppressions:read")
        size = page_size(request.page_size, default=RECORDS_PAGE_SIZE)
        cursor = self._pages.cursor(request, caller=caller.tenant_id)
        rows = await self._suppressions.list(
            caller.tenant_id,
            reason=int(request.reason),
            group=request.unsubscribe_group,
            after=cursor.parse(_address_group_position),
            limit=size + 1,
        )
        page, token = cursor.page(rows, size, _position)
        return P.ListSuppressionsResponse(suppressions=[to_proto(e) for e in page], next_page_token=token)

    async def DeleteSuppression(
        self, request: P.DeleteSuppressionRequest, context: Context
    ) -> P.DeleteSuppressionResponse:
        caller = await self._keys.authorize(context, "suppressions:write")
        await self._suppressions.delete(caller.tenant_id, request.address, request.unsubscribe_group)
        return P.DeleteSuppressionResponse()
