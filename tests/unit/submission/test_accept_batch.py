"""The batch use case with hand-written fakes: each step once for the whole batch, in order, and
the batch decided whole.

Every fake appends to one shared `steps` list, so a test reads the walk exactly as it happened.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf import struct_pb2
from postwire.internal.v1 import bus_pb2
from postwire.v1 import mail_service_pb2, message_pb2, template_pb2

from libs.errors import AlreadyExists, FailedPrecondition, InvalidArgument, RateLimited
from libs.mail.parts import Parts
from libs.mail.states import MessageState, RecipientState
from services.submission.accept_batch import AcceptBatch, Outgoing
from services.submission.acceptance import Accepted, Admission, AdmissionQuery, PinnedTemplate, Replayed
from services.submission.messages import MessageRow, NewMessage

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
TENANT = "00000000-0000-0000-0000-00000000000a"
STALL = timedelta(seconds=30)


@dataclass(frozen=True)
class FakeCaller:
    tenant_id: str = TENANT


@dataclass
class Fakes:
    steps: list[str] = field(default_factory=list)
    existing: dict[str, MessageRow] = field(default_factory=dict)
    suppressed: set[str] = field(default_factory=set)
    over_quota: bool = False
    unverified_at: int | None = None  # policy's own numbering, as AdmitBatch would name it
    bad_variables: set[str] = field(default_factory=set)  # recipients whose render is refused
    lose_race: bool = False
    stored: list[NewMessage] = field(default_factory=list)
    events: list[bus_pb2.EventEnvelope] = field(default_factory=list)
    published: list[Outgoing] = field(default_factory=list)
    queries: list[AdmissionQuery] = field(default_factory=list)
    render_groups: list[tuple[str, int, int]] = field(default_factory=list)  # (template, version, size)
    ids: int = 0

    async def authorize(self) -> FakeCaller:
        self.steps.append("authorize")
        return FakeCaller()

    def clock(self) -> datetime:
        self.steps.append("clock")
        return NOW

    def new_id(self) -> uuid.UUID:
        self.ids += 1
        return uuid.UUID(int=self.ids)

    # BatchStore
    async def find_by_idempotency_keys(self, tenant_id: str, keys: Sequence[str]) -> dict[str, MessageRow]:
        self.steps.append("find_by_idempotency_keys")
        return {k: row for k, row in self.existing.items() if k in keys}

    async def accept_many(
        self, batch: Sequence[NewMessage], events: Sequence[bus_pb2.EventEnvelope]
    ) -> list[str] | None:
        self.steps.append("store")
        if self.lose_race:
            return None
        self.stored.extend(batch)
        self.events.extend(events)
        return [str(m.id) for m in batch]

    # BatchPolicy
    async def admit_batch(self, queries: Sequence[AdmissionQuery]) -> list[Admission]:
        self.steps.append("admit")
        self.queries.extend(queries)
        if self.over_quota:
            raise RateLimited("daily quota spent", retry_after=60, subject="tenant")
        if self.unverified_at is not None:
            raise FailedPrecondition(
                "not verified",
                violations=[("DOMAIN_NOT_VERIFIED", f"messages[{self.unverified_at}].from.address", "x")],
            )
        return [
            Admission(suppressed=tuple(r in self.suppressed for r in q.recipients), sandbox=False) for q in queries
        ]

    # BatchTemplates
    async def pin_group(
        self, tenant_id: str, refs: Sequence[message_pb2.TemplateReference]
    ) -> list[PinnedTemplate | InvalidArgument]:
        self.steps.append("render")
        self.render_groups.append((refs[0].id or refs[0].name, refs[0].version, len(refs)))
        out: list[PinnedTemplate | InvalidArgument] = []
        for ref in refs:
            name = ref.variables.fields["name"].string_value
            if name in self.bad_variables:
                out.append(InvalidArgument([("template.variables", "'name' is not allowed here")]))
            else:
                out.append(
                    PinnedTemplate(
                        template_id=f"id-{ref.id or ref.name}",
                        version=3,
                        versions=[template_pb2.TemplateVersionUsed(name=ref.name or ref.id, version=3)],
                        parts=Parts(f"Hi {name}", f"<p>{name}</p>", name),
                    )
                )
        return out

    # BatchPublisher
    async def publish_many_after_commit(self, outgoing: Sequence[Outgoing]) -> None:
        self.steps.append("publish")
        self.published.extend(outgoing)

    def use_case(self) -> AcceptBatch:
        return AcceptBatch(
            store=self,
            policy=self,
            templates=self,
            publisher=self,
            stall=STALL,
            clock=self.clock,
            new_id=self.new_id,
        )


def message(to: str, **fields: object) -> mail_service_pb2.SendEmailRequest:
    out = mail_service_pb2.SendEmailRequest(subject="Receipt", text_body="Thanks.")
    getattr(out, "from").address = "shop@example.com"
    out.to.add(address=to)
    for name, value in fields.items():
        setattr(out, name, value)
    return out


def templated(to: str, template: str, name: str) -> mail_service_pb2.SendEmailRequest:
    out = message(to, subject="", text_body="")
    out.template.name = template
    variables = struct_pb2.Struct()
    variables.update({"name": name})
    out.template.variables.CopyFrom(variables)
    return out


def batch(*messages: mail_service_pb2.SendEmailRequest) -> mail_service_pb2.SendBatchRequest:
    return mail_service_pb2.SendBatchRequest(messages=messages)


def stored_row(sent: mail_service_pb2.SendEmailRequest, message_id: str) -> MessageRow:
    return MessageRow(
        id=message_id,
        request=sent.SerializeToString(),
        request_hash=hashlib.sha256(sent.SerializeToString(deterministic=True)).digest(),
        stream="transactional",
        create_time=NOW - timedelta(minutes=1),
        send_time=None,
        rfc822_message_id=None,
        recipients=[],
    )


async def test_each_step_runs_once_for_the_whole_batch_in_order() -> None:
    fakes = Fakes(suppressed={"c@example.org"})
    sent = batch(
        templated("a@example.org", "welcome", "Ada"),
        message("b@example.org"),
        templated("c@example.org", "receipt", "Bo"),
        templated("d@example.org", "welcome", "Cy"),
    )

    results = await fakes.use_case().accept(sent, authorize=fakes.authorize)

    assert fakes.steps == [
        "authorize",
        "find_by_idempotency_keys",
        "clock",
        "render",
        "render",
        "admit",
        "store",
        "publish",
    ]
    # One render call per template, every message using it in that call.
    assert fakes.render_groups == [("welcome", 0, 2), ("receipt", 0, 1)]
    assert [q.recipients for q in fakes.queries] == [
        ("a@example.org",),
        ("b@example.org",),
        ("c@example.org",),
        ("d@example.org",),
    ]
    assert [type(r) for r in results] == [Accepted] * 4
    assert [r.recipients[0][0] for r in results if isinstance(r, Accepted)] == [
        "a@example.org",
        "b@example.org",
        "c@example.org",
        "d@example.org",
    ]
    # Rendered parts kept with each message, pinned to the version that rendered.
    assert [m.rendered for m in fakes.stored] == [
        Parts("Hi Ada", "<p>Ada</p>", "Ada"),
        None,
        Parts("Hi Bo", "<p>Bo</p>", "Bo"),
        Parts("Hi Cy", "<p>Cy</p>", "Cy"),
    ]
    pinned = mail_service_pb2.SendEmailRequest.FromString(fakes.stored[0].request).template
    assert (pinned.id, pinned.name, pinned.version) == ("id-welcome", "", 3)
    # The all-suppressed message is stored done and not routed; the others are routed.
    assert fakes.stored[2].state is MessageState.DONE
    assert fakes.stored[2].recipients[0][2] is RecipientState.SUPPRESSED
    assert [o.route for o in fakes.published] == [True, True, False, True]
    assert len(fakes.events) == 4


async def test_a_bad_message_refuses_the_batch_before_the_key_is_even_resolved() -> None:
    fakes = Fakes()
    bad = message("not an address")
    with pytest.raises(InvalidArgument) as refused:
        await fakes.use_case().accept(batch(message("a@example.org"), bad), authorize=fakes.authorize)
    assert [f for f, _ in refused.value.violations] == ["messages[1].to[0].address"]
    assert fakes.steps == []


async def test_a_render_refused_for_one_message_refuses_the_batch_before_admission() -> None:
    fakes = Fakes(bad_variables={"Bo"})
    sent = batch(templated("a@example.org", "welcome", "Ada"), templated("b@example.org", "welcome", "Bo"))
    with pytest.raises(InvalidArgument) as refused:
        await fakes.use_case().accept(sent, authorize=fakes.authorize)
    assert [f for f, _ in refused.value.violations] == ["messages[1].template.variables"]
    assert "admit" not in fakes.steps and fakes.stored == []


async def test_a_full_replay_costs_no_render_admission_or_store() -> None:
    first = message("a@example.org", idempotency_key="k1")
    second = message("b@example.org", idempotency_key="k2")
    fakes = Fakes(existing={"k1": stored_row(first, "id-1"), "k2": stored_row(second, "id-2")})

    results = await fakes.use_case().accept(batch(first, second), authorize=fakes.authorize)

    assert fakes.steps == ["authorize", "find_by_idempotency_keys"]
    assert [r.message.id for r in results if isinstance(r, Replayed)] == ["id-1", "id-2"]


async def test_a_partial_replay_admits_and_stores_only_the_new_messages_keeping_request_order() -> None:
    first = message("a@example.org", idempotency_key="k1")
    fakes = Fakes(existing={"k1": stored_row(first, "id-1")})

    results = await fakes.use_case().accept(
        batch(message("z@example.org"), first, message("b@example.org")), authorize=fakes.authorize
    )

    assert [q.recipients for q in fakes.queries] == [("z@example.org",), ("b@example.org",)]
    assert [type(r) for r in results] == [Accepted, Replayed, Accepted]


async def test_a_reused_key_with_a_different_message_names_it_and_stores_nothing() -> None:
    fakes = Fakes(existing={"k1": stored_row(message("a@example.org", idempotency_key="k1"), "id-1")})
    sent = batch(message("z@example.org"), message("b@example.org", idempotency_key="k1"))
    with pytest.raises(AlreadyExists) as refused:
        await fakes.use_case().accept(sent, authorize=fakes.authorize)
    assert refused.value.field == "messages[1].idempotency_key"
    assert fakes.steps == ["authorize", "find_by_idempotency_keys"]


async def test_a_refused_admission_stores_nothing() -> None:
    fakes = Fakes(over_quota=True)
    with pytest.raises(RateLimited):
        await fakes.use_case().accept(
            batch(message("a@example.org"), message("b@example.org")), authorize=fakes.authorize
        )
    assert "store" not in fakes.steps and fakes.published == []


async def test_policy_violations_are_named_by_the_callers_positions_not_policys() -> None:
    # Message 0 replays, so policy sees the batch's message 2 as its message 1.
    first = message("a@example.org", idempotency_key="k1")
    fakes = Fakes(existing={"k1": stored_row(first, "id-1")}, unverified_at=1)
    with pytest.raises(FailedPrecondition) as refused:
        await fakes.use_case().accept(
            batch(first, message("b@example.org"), message("c@example.org")), authorize=fakes.authorize
        )
    assert [field for _, field, _ in refused.value.violations] == ["messages[2].from.address"]


async def test_a_lost_race_is_answered_as_the_winners_replay() -> None:
    first = message("a@example.org", idempotency_key="k1")
    fakes = Fakes(lose_race=True)
    use_case = fakes.use_case()

    async def winner_stored(tenant_id: str, keys: Sequence[str]) -> dict[str, MessageRow]:
        fakes.steps.append("find_by_idempotency_keys")
        return {"k1": stored_row(first, "id-w")} if "store" in fakes.steps else {}

    fakes.find_by_idempotency_keys = winner_stored  # type: ignore[method-assign]
    results = await use_case.accept(batch(first), authorize=fakes.authorize)
    assert [r.message.id for r in results if isinstance(r, Replayed)] == ["id-w"]
    assert fakes.published == []
