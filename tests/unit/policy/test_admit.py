"""Admission's steps in order, with hand-written fakes of its ports (no I/O)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from libs.errors import FailedPrecondition, InvalidArgument, RateLimited, Unauthenticated
from services.policy.admit import Admit, Decision, Send
from services.policy.limits import Limits, Refusal

TENANT = "7d1f3c1e-0000-4000-8000-000000000001"


class World:
    """Every port at once, writing what was asked into one log so the order shows."""

    def __init__(
        self,
        *,
        sandbox: bool | None = False,
        limits: Sequence[Limits] = (),
        suppressed: set[str] | None = None,
        verified: bool = True,
        refusal: Refusal | None = None,
    ) -> None:
        self.log: list[str] = []
        self.charged: list[tuple[list[str], int]] = []
        self._sandbox = sandbox
        self._limits = list(limits)
        self._suppressed = suppressed or set()
        self._verified = verified
        self._refusal = refusal

    async def sandbox(self, tenant_id: str) -> bool | None:
        self.log.append("tenant")
        return self._sandbox

    async def limits(self, tenant_id: str) -> list[Limits]:
        self.log.append("limits")
        return self._limits

    async def check_from(self, tenant_id: str, from_domain: str) -> None:
        self.log.append("from")
        if not self._verified:
            raise FailedPrecondition(
                "not verified", violations=[("DOMAIN_NOT_VERIFIED", "from.address", "x")]
            )

    async def suppressed(self, tenant_id: str, addresses: Sequence[str], group: str) -> set[str]:
        self.log.append("suppressions")
        return {a for a in addresses if a in self._suppressed}

    async def consume_many(
        self, sends: Sequence[tuple[str, Sequence[tuple[Limits, int]]]]
    ) -> list[Refusal | None]:
        self.log.append("charge")
        self.charged.extend(([lim.stream], n) for _, charges in sends for lim, n in charges)
        # A refusal, when set, for the sends with more than one recipient.
        return [self._refusal if charges[0][1] > 1 else None for _, charges in sends]


def _admit(world: World) -> Admit:
    return Admit(world, world, world, world)


def _send(*recipients: str, stream: str = "transactional", group: str = "") -> Send:
    return Send(TENANT, "example.org", stream, group, tuple(recipients))


async def test_the_steps_run_in_order_and_only_admitted_recipients_are_charged() -> None:
    world = World(limits=[Limits("transactional", recipients_per_day=10)], suppressed={"b@x.org"})

    admission = await _admit(world)(_send("a@x.org", "b@x.org", "c@x.org"))

    assert admission.decisions == (Decision.ADMIT, Decision.SUPPRESS, Decision.ADMIT)
    assert not admission.sandbox
    assert world.log == ["tenant", "from", "suppressions", "limits", "charge"]
    assert world.charged == [(["transactional"], 2)]


async def test_an_unknown_tenant_is_refused_before_anything_else() -> None:
    world = World(sandbox=None, limits=[Limits("*", recipients_per_day=10)])

    with pytest.raises(Unauthenticated):
        await _admit(world)(_send("a@x.org"))

    assert world.log == ["tenant"]
    assert world.charged == []


async def test_a_sandbox_tenant_is_told_so_and_still_charged() -> None:
    world = World(sandbox=True, limits=[Limits("*", recipients_per_day=10)])

    admission = await _admit(world)(_send("a@x.org"))

    assert admission.sandbox
    assert world.charged == [(["*"], 1)]


async def test_an_unverified_from_domain_is_refused_before_suppressions_and_charges() -> None:
    world = World(verified=False, limits=[Limits("*", recipients_per_day=10)])

    with pytest.raises(FailedPrecondition):
        await _admit(world)(_send("a@x.org"))

    assert world.log == ["tenant", "from"]


async def test_bad_stream_and_group_names_are_refused_before_lookups() -> None:
    world = World()

    with pytest.raises(InvalidArgument) as refused:
        await _admit(world)(_send("a@x.org", stream="Not A Stream", group="also bad!"))

    assert [field for field, _ in refused.value.violations] == ["stream", "unsubscribe_group"]
    assert world.log == ["tenant", "from"]


async def test_nothing_is_charged_when_every_recipient_is_suppressed() -> None:
    world = World(limits=[Limits("*", recipients_per_day=10)], suppressed={"a@x.org"})

    admission = await _admit(world)(_send("a@x.org"))

    assert admission.decisions == (Decision.SUPPRESS,)
    assert world.charged == []


async def test_limits_of_other_streams_are_not_charged() -> None:
    world = World(limits=[Limits("marketing", recipients_per_day=10), Limits("*", recipients_per_day=99)])

    await _admit(world)(_send("a@x.org"))

    assert world.charged == [(["*"], 1)]


async def test_a_refusal_is_rate_limited_with_its_subject_and_wait() -> None:
    refusal = Refusal(subject="stream 'transactional'", description="daily quota", retry_after=30.0)
    world = World(limits=[Limits("transactional", recipients_per_day=1)], refusal=refusal)

    with pytest.raises(RateLimited) as refused:
        await _admit(world)(_send("a@x.org", "b@x.org"))

    assert refused.value.retry_after == 30.0
    assert refused.value.subject == "stream 'transactional'"


async def test_a_batch_is_one_decision_each_step_once_and_each_limit_charged_once() -> None:
    world = World(
        limits=[Limits("transactional", recipients_per_day=10), Limits("*", recipients_per_day=99)],
        suppressed={"b@x.org"},
    )

    admissions = await _admit(world).batch(
        TENANT,
        [
            _send("a@x.org", "b@x.org"),
            _send("c@x.org", stream="marketing"),
            _send("d@x.org"),
        ],
    )

    assert [a.decisions for a in admissions] == [
        (Decision.ADMIT, Decision.SUPPRESS),
        (Decision.ADMIT,),
        (Decision.ADMIT,),
    ]
    # One From check per domain, one lookup per unsubscribe group, one charge for the batch.
    assert world.log == ["tenant", "from", "suppressions", "limits", "charge"]
    # The tenant-wide limit takes every admitted recipient, a stream's limit only its own.
    assert world.charged == [(["*"], 3), (["transactional"], 2)]


async def test_a_batch_refused_by_a_limit_is_refused_whole() -> None:
    refusal = Refusal(subject="tenant (all streams)", description="daily quota", retry_after=30.0)
    world = World(limits=[Limits("*", recipients_per_day=1)], refusal=refusal)

    with pytest.raises(RateLimited):
        await _admit(world).batch(TENANT, [_send("a@x.org"), _send("b@x.org")])


async def test_batch_violations_name_the_message() -> None:
    world = World()

    with pytest.raises(InvalidArgument) as refused:
        await _admit(world).batch(TENANT, [_send("a@x.org"), _send("b@x.org", group="also bad!")])

    assert [field for field, _ in refused.value.violations] == ["messages[1].unsubscribe_group"]
    assert world.log == ["tenant", "from"]


async def test_an_unverified_from_domain_in_a_batch_names_its_first_message() -> None:
    world = World(verified=False)

    with pytest.raises(FailedPrecondition) as refused:
        await _admit(world).batch(TENANT, [_send("a@x.org"), _send("b@x.org")])

    assert [field for _, field, _ in refused.value.violations] == ["messages[0].from.address"]


async def test_concurrent_sends_share_each_step_and_keep_their_own_outcomes() -> None:
    refusal = Refusal(subject="tenant (all streams)", description="daily quota", retry_after=30.0)
    world = World(limits=[Limits("*", recipients_per_day=10)], suppressed={"s@x.org"}, refusal=refusal)

    outcomes = await _admit(world).many(
        [
            _send("a@x.org"),
            _send("b@x.org", stream="Not A Stream"),
            _send("c@x.org", "d@x.org"),
            _send("s@x.org"),
            _send("e@x.org", group="news"),
        ]
    )

    assert [type(o).__name__ for o in outcomes] == [
        "Admission",
        "InvalidArgument",
        "RateLimited",
        "Admission",
        "Admission",
    ]
    # One tenant, one domain, one lookup per group (together), one charge for the call; the
    # suppressed-only send and the invalid one are not charged.
    assert world.log == ["tenant", "from", "suppressions", "suppressions", "limits", "charge"]
    assert world.charged == [(["*"], 1), (["*"], 2), (["*"], 1)]


async def test_an_unknown_tenant_fails_only_its_own_sends() -> None:
    world = World(sandbox=None)

    outcomes = await _admit(world).many([_send("a@x.org")])

    assert isinstance(outcomes[0], Unauthenticated)
    assert world.log == ["tenant"]
