"""postwire.v1.SuppressionService (public) and the suppression lookups admission makes."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import grpc
from postwire.v1 import suppression_service_pb2, suppression_service_pb2_grpc

from libs.errors import InvalidArgument, NotFound
from libs.mail.stream_names import name_problem
from libs.page_tokens import RECORDS_PAGE_SIZE, PageTokens, page_size
from services.policy.core import PolicyCore
from services.policy.suppression_lookup import Suppressions
from services.policy.suppressions import MAX_BATCH, Entry, check_entry, normalise_address


def to_proto(e: Entry) -> suppression_service_pb2.Suppression:
    out = suppression_service_pb2.Suppression(
        address=e.address,
        reason=e.reason,  # type: ignore[arg-type]
        unsubscribe_group=e.group,
        source_message_id=str(e.source_message_id) if e.source_message_id else "",
    )
    if e.create_time is not None:
        out.create_time.FromDatetime(e.create_time)
    if e.expire_time is not None:
        out.expire_time.FromDatetime(e.expire_time)
    return out


def entries_from(items: Sequence[suppression_service_pb2.Suppression], field: str) -> list[Entry]:
    """Every entry checked; any violation refuses them all."""
    if not items:
        raise InvalidArgument([(field, "at least one suppression is required")])
    if len(items) > MAX_BATCH:
        raise InvalidArgument([(field, f"at most {MAX_BATCH} suppressions per call")])
    now = datetime.now(UTC)
    entries: list[Entry] = []
    violations: list[tuple[str, str]] = []
    for i, s in enumerate(items):
        expire = s.expire_time.ToDatetime(tzinfo=UTC) if s.HasField("expire_time") else None
        entry, problems = check_entry(
            f"{field}[{i}]", s.address, s.reason, s.unsubscribe_group, s.source_message_id, expire, now
        )
        violations += problems
        if entry is not None:
            entries.append(entry)
    if violations:
        raise InvalidArgument(violations[:100])
    # The last entry for an address and group wins, as if they were applied in order.
    return list({(e.address, e.group): e for e in entries}.values())


def _address_group_position(position: str) -> tuple[str, str]:
    address, sep, group = position.partition("\n")
    if not sep:
        raise ValueError(position)
    return address, group


def _address_and_group(address: str, group: str) -> tuple[str, str]:
    violations = []
    if "@" not in address:
        violations.append(("address", "an email address is required"))
    problem = group and name_problem(group)
    if problem:
        violations.append(("unsubscribe_group", problem))
    if violations:
        raise InvalidArgument(violations)
    return normalise_address(address), group


class SuppressionApi(suppression_service_pb2_grpc.SuppressionServiceServicer):
    def __init__(self, core: PolicyCore, suppressions: Suppressions, pages: PageTokens) -> None:
        self._core = core
        self._suppressions = suppressions
        self._pages = pages

    async def BatchCreateSuppressions(
        self,
        request: suppression_service_pb2.BatchCreateSuppressionsRequest,
        context: grpc.aio.ServicerContext,
    ) -> suppression_service_pb2.BatchCreateSuppressionsResponse:
        caller = await self._core.caller(context, "suppressions:write")
        entries = entries_from(request.suppressions, "suppressions")
        stored = await self._suppressions.record(caller.tenant_id, entries)
        return suppression_service_pb2.BatchCreateSuppressionsResponse(
            suppressions=[to_proto(e) for e in stored]
        )

    async def GetSuppression(
        self, request: suppression_service_pb2.GetSuppressionRequest, context: grpc.aio.ServicerContext
    ) -> suppression_service_pb2.GetSuppressionResponse:
        caller = await self._core.caller(context, "suppressions:read")
        address, group = _address_and_group(request.address, request.unsubscribe_group)
        found = await self._suppressions.store.get(caller.tenant_id, address, group)
        if found is None:
            raise NotFound(f"'{address}' is not suppressed" + (f" for group '{group}'" if group else ""))
        return suppression_service_pb2.GetSuppressionResponse(suppression=to_proto(found))

    async def ListSuppressions(
        self, request: suppression_service_pb2.ListSuppressionsRequest, context: grpc.aio.ServicerContext
    ) -> suppression_service_pb2.ListSuppressionsResponse:
        caller = await self._core.caller(context, "suppressions:read")
        if request.unsubscribe_group and (problem := name_problem(request.unsubscribe_group)):
            raise InvalidArgument([("unsubscribe_group", problem)])
        size = page_size(request.page_size, default=RECORDS_PAGE_SIZE)
        cursor = self._pages.cursor(request, caller=caller.tenant_id)
        rows = await self._suppressions.store.list(
            caller.tenant_id,
            reason=int(request.reason),
            group=request.unsubscribe_group or None,
            after=cursor.parse(_address_group_position),
            limit=size + 1,
        )
        page, token = cursor.page(rows, size, lambda e: f"{e.address}\n{e.group}")
        return suppression_service_pb2.ListSuppressionsResponse(
            suppressions=[to_proto(e) for e in page], next_page_token=token
        )

    async def DeleteSuppression(
        self, request: suppression_service_pb2.DeleteSuppressionRequest, context: grpc.aio.ServicerContext
    ) -> suppression_service_pb2.DeleteSuppressionResponse:
        caller = await self._core.caller(context, "suppressions:write")
        address, group = _address_and_group(request.address, request.unsubscribe_group)
        if not await self._suppressions.store.delete(caller.tenant_id, address, group):
            raise NotFound(f"'{address}' is not suppressed" + (f" for group '{group}'" if group else ""))
        self._suppressions.changed(caller.tenant_id, [(address, group)])
        return suppression_service_pb2.DeleteSuppressionResponse()
