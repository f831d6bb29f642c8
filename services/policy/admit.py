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

from libs.errors import FailedPrecondition, InvalidArgument, RateLimited, Unauthenticated
from libs.mail.stream_names import name_problem
from services.policy.limits import Limits, Refusal, applicable

__all__ = ["Admission", "Admit", "Decision", "Send"]

# One charge: a limit and how many recipients it is charged with.
Charge = tuple[Limits, int]


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

    async def consume_each(self, tenant_id: str, charges: Sequence[Charge]) -> Refusal | None:
        """Every charge in one transaction, or none."""
        ...


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
        sandbox = await self._tenant(send.tenant_id)
        await self._from_domains.check_from(send.tenant_id, send.from_domain)
        # Submission checked both already; the same rule again, since any internal caller lands here.
        violations = _name_violations(send, prefix="")
        if violations:
            raise InvalidArgument(violations)
        suppressed = await self._suppressions.suppressed(
            send.tenant_id, send.recipients, send.unsubscribe_group
        )
        decisions = _decisions(send, suppressed)
        admitted = decisions.count(Decision.ADMIT)
        limits = applicable(await self._tenants.limits(send.tenant_id), send.stream)
        if limits and admitted:
            _raise_refusal(await self._meter.consume(send.tenant_id, limits, admitted))
        return Admission(sandbox=sandbox, decisions=decisions)

    async def batch(self, tenant_id: str, sends: Sequence[Send]) -> list[Admission]:
        """A SendBatch as one decision, the steps of a single send each run once for the batch:
        one From check per domain, one suppression lookup per group, and one charge for every
        limit (the stream's own limits get that stream's admitted recipients, tenant-wide limits
        all of them) in one transaction, so the batch is admitted whole or refused whole."""
        sandbox = await self._tenant(tenant_id)
        first_with: dict[str, int] = {}
        for i, send in enumerate(sends):
            first_with.setdefault(send.from_domain, i)
        for domain, i in first_with.items():
            try:
                await self._from_domains.check_from(tenant_id, domain)
            except FailedPrecondition as exc:
                # Named at the first message that uses the domain, like every batch violation.
                exc.violations = [(kind, f"messages[{i}].{field}", text) for kind, field, text in exc.violations]
                raise
        violations = [v for i, send in enumerate(sends) for v in _name_violations(send, prefix=f"messages[{i}].")]
        if violations:
            raise InvalidArgument(violations)
        groups: dict[str, list[str]] = {}
        for send in sends:
            groups.setdefault(send.unsubscribe_group, []).extend(send.recipients)
        by_group = {
            group: await self._suppressions.suppressed(tenant_id, list(dict.fromkeys(addresses)), group)
            for group, addresses in groups.items()
        }
        decisions = [_decisions(send, by_group[send.unsubscribe_group]) for send in sends]
        admitted: dict[str, int] = {}
        for send, decided in zip(sends, decisions, strict=True):
            admitted[send.stream] = admitted.get(send.stream, 0) + decided.count(Decision.ADMIT)
        tenant_limits = await self._tenants.limits(tenant_id)
        charges: dict[Limits, int] = {}
        for stream, count in admitted.items():
            for limit in applicable(tenant_limits, stream):
                charges[limit] = charges.get(limit, 0) + count
        # The order applicable() gives, so replicas lock the rows in one order.
        ordered = sorted(((lim, n) for lim, n in charges.items() if n), key=lambda c: c[0].stream)
        if ordered:
            _raise_refusal(await self._meter.consume_each(tenant_id, ordered))
        return [Admission(sandbox=sandbox, decisions=d) for d in decisions]

    async def _tenant(self, tenant_id: str) -> bool:
        sandbox = await self._tenants.sandbox(tenant_id)
        if sandbox is None:
            # The key that named this tenant is as good as unknown.
            raise Unauthenticated("unknown or revoked API key")
        return sandbox


def _name_violations(send: Send, *, prefix: str) -> list[tuple[str, str]]:
    violations: list[tuple[str, str]] = []
    if problem := name_problem(send.stream):
        violations.append((f"{prefix}stream", problem))
    if send.unsubscribe_group and (problem := name_problem(send.unsubscribe_group)):
        violations.append((f"{prefix}unsubscribe_group", problem))
    return violations


def _decisions(send: Send, suppressed: set[str]) -> tuple[Decision, ...]:
    return tuple(Decision.SUPPRESS if a in suppressed else Decision.ADMIT for a in send.recipients)


def _raise_refusal(refusal: Refusal | None) -> None:
    if refusal is not None:
        raise RateLimited(
            f"{refusal.subject}: {refusal.description}",
            retry_after=refusal.retry_after,
            subject=refusal.subject,
            description=refusal.description,
        )
