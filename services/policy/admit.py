"""Admission of one send, in this order: the tenant must exist (UNAUTHENTICATED otherwise,
before anything is charged), the From domain must be one of its verified domains, the stream and
unsubscribe group names must be valid, each recipient is admitted or suppressed, and only the
admitted recipients are charged against the stream's and the tenant's limits.
No I/O of its own: the lookups and the meter are ports."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol, TypeVar

from postwire.internal.v1 import policy_service_pb2 as _pb

from libs.errors import FailedPrecondition, InvalidArgument, RateLimited, Unauthenticated
from libs.mail.stream_names import name_problem
from services.policy.ledger import Charge
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
    async def consume_many(self, sends: Sequence[tuple[str, Sequence[Charge]]]) -> list[Refusal | None]:
        """Each send's charges all or none, in the order given, in one transaction."""
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
        outcome = (await self.many([send]))[0]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def many(self, sends: Sequence[Send]) -> list[Admission | Exception]:
        """Concurrent sends, each with its own outcome as if admitted alone, for one lookup per
        tenant, From domain and suppression group, and one transaction that charges the sends in
        the order given: a send the limits refuse gets its own RateLimited and is not charged."""
        failed: dict[int, Exception] = {}

        def pending() -> list[tuple[int, Send]]:
            return [(i, s) for i, s in enumerate(sends) if i not in failed]

        sandbox = await _each([s.tenant_id for s in sends], self._tenant)
        _fail(failed, pending(), lambda s: sandbox[s.tenant_id])
        checked = await _each(
            [(s.tenant_id, s.from_domain) for _, s in pending()], lambda k: self._from_domains.check_from(*k)
        )
        _fail(failed, pending(), lambda s: checked[(s.tenant_id, s.from_domain)])
        _fail(failed, pending(), lambda s: _invalid(_name_violations(s, prefix="")))
        groups: dict[tuple[str, str], dict[str, None]] = {}
        for _, send in pending():
            groups.setdefault((send.tenant_id, send.unsubscribe_group), {}).update(
                dict.fromkeys(send.recipients)
            )
        # Together, so the lookups share one statement (CoalescedLookups).
        found = await asyncio.gather(
            *(self._suppressions.suppressed(t, list(addresses), g) for (t, g), addresses in groups.items()),
            return_exceptions=True,
        )
        suppressed = dict(zip(groups, found, strict=True))
        _fail(failed, pending(), lambda s: suppressed[(s.tenant_id, s.unsubscribe_group)])
        limits = await _each([s.tenant_id for _, s in pending()], self._tenants.limits)
        _fail(failed, pending(), lambda s: limits[s.tenant_id])
        admissions: dict[int, Admission] = {}
        charged: list[tuple[int, tuple[str, list[Charge]]]] = []
        for i, send in pending():
            decisions = _decisions(send, _ok(suppressed[(send.tenant_id, send.unsubscribe_group)]))
            admissions[i] = Admission(sandbox=_ok(sandbox[send.tenant_id]), decisions=decisions)
            admitted = decisions.count(Decision.ADMIT)
            if admitted and (applies := applicable(_ok(limits[send.tenant_id]), send.stream)):
                charged.append((i, (send.tenant_id, [(lim, admitted) for lim in applies])))
        if charged:
            try:
                refusals = await self._meter.consume_many([c for _, c in charged])
            except Exception as exc:  # the store's failure is every charged send's failure
                failed.update((i, exc) for i, _ in charged)
            else:
                failed.update((i, _rate_limited(r)) for (i, _), r in zip(charged, refusals, strict=True) if r)
        return [failed[i] if i in failed else admissions[i] for i in range(len(sends))]

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
                exc.violations = [
                    (kind, f"messages[{i}].{field}", text) for kind, field, text in exc.violations
                ]
                raise
        violations = [
            v for i, send in enumerate(sends) for v in _name_violations(send, prefix=f"messages[{i}].")
        ]
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
        if ordered and (refusal := (await self._meter.consume_many([(tenant_id, ordered)]))[0]):
            raise _rate_limited(refusal)
        return [Admission(sandbox=sandbox, decisions=d) for d in decisions]

    async def _tenant(self, tenant_id: str) -> bool:
        sandbox = await self._tenants.sandbox(tenant_id)
        if sandbox is None:
            # The key that named this tenant is as good as unknown.
            raise Unauthenticated("unknown or revoked API key")
        return sandbox


K = TypeVar("K")
T = TypeVar("T")


async def _each(keys: Iterable[K], answer: Callable[[K], Awaitable[T]]) -> dict[K, T | Exception]:
    """`answer` once per distinct key, its exception kept as that key's outcome."""
    answers: dict[K, T | Exception] = {}
    for key in dict.fromkeys(keys):
        try:
            answers[key] = await answer(key)
        except Exception as exc:
            answers[key] = exc
    return answers


def _fail(
    failed: dict[int, Exception], pending: Iterable[tuple[int, Send]], outcome: Callable[[Send], object]
) -> None:
    """Mark the pending sends whose outcome is an exception as failed with it."""
    for i, send in pending:
        if isinstance(found := outcome(send), Exception):
            failed[i] = found


def _ok(answer: T | BaseException) -> T:
    """An answer _fail has already shown is no exception."""
    if isinstance(answer, BaseException):
        raise answer
    return answer


def _invalid(violations: list[tuple[str, str]]) -> InvalidArgument | None:
    return InvalidArgument(violations) if violations else None


def _name_violations(send: Send, *, prefix: str) -> list[tuple[str, str]]:
    violations: list[tuple[str, str]] = []
    if problem := name_problem(send.stream):
        violations.append((f"{prefix}stream", problem))
    if send.unsubscribe_group and (problem := name_problem(send.unsubscribe_group)):
        violations.append((f"{prefix}unsubscribe_group", problem))
    return violations


def _decisions(send: Send, suppressed: set[str]) -> tuple[Decision, ...]:
    return tuple(Decision.SUPPRESS if a in suppressed else Decision.ADMIT for a in send.recipients)


def _rate_limited(refusal: Refusal) -> RateLimited:
    return RateLimited(
        f"{refusal.subject}: {refusal.description}",
        retry_after=refusal.retry_after,
        subject=refusal.subject,
        description=refusal.description,
    )
