"""Admission of one send, in this order: the tenant must exist (UNAUTHENTICATED otherwise,
before anything is charged), the From domain must be one of its verified domains, the stream and
unsubscribe group names must be valid, each recipient is admitted or suppressed, and only the
admitted recipients are charged against the stream's and the tenant's limits.
No I/O of its own: the lookups and the meter are ports."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol

from postwire.internal.v1 import policy_service_pb2 as _pb

from libs.errors import InvalidArgument, RateLimited, Unauthenticated
from libs.mail.stream_names import name_problem
from services.policy.limits import Limits, Refusal, applicable

__all__ = ["Admission", "Admit", "Decision", "Send"]


class Decision(IntEnum):
    """postwire.internal.v1.Decision, per recipient."""

    ADMIT = _pb.DECISION_ADMIT
    SUPPRESS = _pb.DECISION_SUPPRESS


class Tenants(Protocol):
    async def sandbox(self, tenant_id: str) -> bool | None: ...
    async def limits(self, tenant_id: str) -> list[Limits]: ...


class FromDomains(Protocol):
    async def check_from(self, tenant_id: str, from_domain: str) -> None: ...


class SuppressionLookup(Protocol):
    async def suppressed(self, tenant_id: str, addresses: Sequence[str], group: str) -> set[str]: ...


class Meter(Protocol):
    async def consume(self, tenant_id: str, limits: Sequence[Limits], recipients: int) -> Refusal | None: ...


@dataclass(frozen=True, slots=True)
class Send:
    tenant_id: str
    from_domain: str
    stream: str
    unsubscribe_group: str
    recipients: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Admission:
    sandbox: bool
    decisions: tuple[Decision, ...]  # one per recipient, in the request's order


class Admit:
    def __init__(
        self, tenants: Tenants, from_domains: FromDomains, suppressions: SuppressionLookup, meter: Meter
    ) -> None:
        self._tenants = tenants
        self._from_domains = from_domains
        self._suppressions = suppressions
        self._meter = meter

    async def __call__(self, send: Send) -> Admission:
        sandbox = await self._tenants.sandbox(send.tenant_id)
        if sandbox is None:
            # The key that named this tenant is as good as unknown.
            raise Unauthenticated("unknown or revoked API key")
        await self._from_domains.check_from(send.tenant_id, send.from_domain)
        # Submission checked both already; the same rule again, since any internal caller lands here.
        violations: list[tuple[str, str]] = []
        if problem := name_problem(send.stream):
            violations.append(("stream", problem))
        if send.unsubscribe_group and (problem := name_problem(send.unsubscribe_group)):
            violations.append(("unsubscribe_group", problem))
        if violations:
            raise InvalidArgument(violations)
        suppressed = await self._suppressions.suppressed(
            send.tenant_id, send.recipients, send.unsubscribe_group
        )
        decisions = tuple(Decision.SUPPRESS if a in suppressed else Decision.ADMIT for a in send.recipients)
        admitted = decisions.count(Decision.ADMIT)
        limits = applicable(await self._tenants.limits(send.tenant_id), send.stream)
        if limits and admitted:
            refusal = await self._meter.consume(send.tenant_id, limits, admitted)
            if refusal is not None:
                raise RateLimited(
                    f"{refusal.subject}: {refusal.description}",
                    retry_after=refusal.retry_after,
                    subject=refusal.subject,
                    description=refusal.description,
                )
        return Admission(sandbox=sandbox, decisions=decisions)
