"""The accept use case with hand-written fakes: the order of its steps and what each outcome stores.

Every fake appends to one shared `steps` list, so a test reads the walk exactly as it happened.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from postwire.internal.v1 import bus_pb2
from postwire.v1 import event_pb2, mail_service_pb2, message_pb2, template_pb2

from libs.errors import AlreadyExists, InvalidArgument, RateLimited, Unauthenticated
from libs.mail.states import MessageState, RecipientState
from services.submission.accept import (
    Accept,
    Accepted,
    Admission,
    AdmissionQuery,
    PinnedTemplate,
    Replayed,
)
from services.submission.acceptance import Stamp
from services.submission.messages import MessageRow, NewMessage, RecipientRow

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
TENANT = "00000000-0000-0000-0000-00000000000a"
MESSAGE_ID = uuid.UUID("11111111-1111-1111-1111-111111111111")
STALL = timedelta(seconds=30)


@dataclass(frozen=True)
class FakeCaller:
    tenant_id: str = TENANT


@dataclass
class Fakes:
    steps: list[str] = field(default_factory=list)
    existing: MessageRow | None = None
    # What find_by_idempotency_key answers after a lost insert race.
    winner: MessageRow | None = None
    lose_race: bool = False
    suppressed: set[str] = field(default_factory=set)
    sandbox: bool = False
    reject_key: bool = False
    over_quota: bool = False
    stored: list[tuple[NewMessage, list[bus_pb2.EventEnvelope]]] = field(default_factory=list)
    published: list[tuple[str, list[bus_pb2.EventEnvelope], bool]] = field(default_factory=list)
    queries: list[AdmissionQuery] = field(default_factory=list)

    async def authorize(self) -> FakeCaller:
        self.steps.append("authorize")
        if self.reject_key:
            raise Unauthenticated("unknown key")
        return FakeCaller()

    def clock(self) -> datetime:
        self.steps.append("clock")
        return NOW

    # MessageStore
    async def find_by_idempotency_key(self, tenant_id: str, key: str) -> MessageRow | None:
        self.steps.append("find_by_idempotency_key")
        return self.winner if self.stored else self.existing

    async def accept(self, message: NewMessage, events: Sequence[bus_pb2.EventEnvelope]) -> str | None:
        self.steps.append("store")
        self.stored.append((message, list(events)))
        return None if self.lose_race else str(message.id)

    # Policy
    async def admit(self, query: AdmissionQuery) -> Admission:
        self.steps.append("admit")
        self.queries.append(query)
        if self.over_quota:
            raise RateLimited("daily quota spent", retry_after=60, subject="tenant")
        return Admission(
            suppressed=tuple(r in self.suppressed for r in query.recipients), sandbox=self.sandbox
        )

    # TemplateChecker
    async def pin(self, tenant_id: str, ref: message_pb2.TemplateReference) -> PinnedTemplate:
        self.steps.append("template")
        return PinnedTemplate(
            template_id="tpl-1",
            version=7,
            versions=[template_pb2.TemplateVersionUsed(name="welcome", version=7)],
        )

    # Publisher
    async def publish_after_commit(
        self, message_id: str, events: Sequence[bus_pb2.EventEnvelope], *, route: bool
    ) -> None:
        self.steps.append("publish")
        self.published.append((message_id, list(events), route))

    def use_case(self) -> Accept:
        return Accept(
            store=self,
            policy=self,
            templates=self,
            publisher=self,
            stamp=Stamp(STALL, clock=self.clock, new_id=lambda: MESSAGE_ID),
        )


def request(*to: str, **fields: object) -> mail_service_pb2.SendEmailRequest:
    out = mail_service_pb2.SendEmailRequest(subject="Receipt", text_body="Thanks.")
    getattr(out, "from").address = "shop@Example.com"
    for address in to or ("a@example.org",):
        out.to.add(address=address)
    for name, value in fields.items():
        setattr(out, name, value)
    return out


def stored_row(sent: mail_service_pb2.SendEmailRequest, *, message_id: str = "first-id") -> MessageRow:
    return MessageRow(
        id=message_id,
        request=sent.SerializeToString(),
        request_hash=hashlib.sha256(sent.SerializeToString(deterministic=True)).digest(),
        stream="transactional",
        create_time=NOW - timedelta(minutes=1),
        send_time=None,
        rfc822_message_id=None,
        recipients=[
            RecipientRow(
                address="a@example.org",
                kind=message_pb2.RECIPIENT_KIND_TO,
                state=RecipientState.DELIVERED,
                attempts=1,
                last_code=250,
                last_enhanced="2.0.0",
                last_text="ok",
                next_attempt_time=None,
                update_time=NOW,
            )
        ],
    )


async def test_a_new_message_walks_every_step_in_order() -> None:
    fakes = Fakes()
    sent = request(idempotency_key="k-1")
    sent.template.name = "welcome"
    sent.ClearField("text_body")

    result = await fakes.use_case().accept(sent, authorize=fakes.authorize)

    assert fakes.steps == [
        "authorize",
        "find_by_idempotency_key",
        "clock",  # the send_time check: after the replay check, so a replay never meets it
        "template",
        "admit",
        "store",
        "publish",
    ]
    assert result == Accepted(
        message_id=str(MESSAGE_ID),
        recipients=(("a@example.org", message_pb2.RECIPIENT_KIND_TO, RecipientState.ACCEPTED),),
    )
    message, events = fakes.stored[0]
    assert message.state is MessageState.ACCEPTED
    assert message.route_due_time == NOW + STALL
    assert message.idempotency_key == "k-1"
    # The stored request names the exact version that rendered, not the name the caller gave.
    pinned = mail_service_pb2.SendEmailRequest.FromString(message.request).template
    assert (pinned.id, pinned.name, pinned.version) == ("tpl-1", "", 7)
    assert [e.event.type for e in events] == [event_pb2.EVENT_TYPE_ACCEPTED]
    assert fakes.published == [(str(MESSAGE_ID), events, True)]
    assert fakes.queries[0].from_domain == "example.com"


async def test_a_bad_request_is_refused_before_the_key_is_looked_up() -> None:
    fakes = Fakes(reject_key=True)
    bad = request("not an address")

    with pytest.raises(InvalidArgument) as caught:
        await fakes.use_case().accept(bad, authorize=fakes.authorize)

    assert [f for f, _ in caught.value.violations] == ["to[0].address"]
    assert fakes.steps == []


async def test_an_unknown_key_stops_before_any_lookup() -> None:
    fakes = Fakes(reject_key=True)

    with pytest.raises(Unauthenticated):
        await fakes.use_case().accept(request(idempotency_key="k-1"), authorize=fakes.authorize)

    assert fakes.steps == ["authorize"]


async def test_a_replay_is_answered_before_send_time_template_and_admission() -> None:
    sent = request(idempotency_key="k-1")
    # A send_time the first call passed, now far in the past, and a spent quota: neither matters.
    sent.send_time.FromDatetime(NOW - timedelta(days=2))
    first = stored_row(sent)
    fakes = Fakes(existing=first, over_quota=True)

    result = await fakes.use_case().accept(sent, authorize=fakes.authorize)

    assert result == Replayed(first)
    assert fakes.steps == ["authorize", "find_by_idempotency_key"]
    assert fakes.stored == [] and fakes.published == []


async def test_the_same_key_with_a_different_request_is_already_exists_without_admission() -> None:
    fakes = Fakes(existing=stored_row(request(idempotency_key="k-1")))
    changed = request(idempotency_key="k-1", subject="Another subject")

    with pytest.raises(AlreadyExists) as caught:
        await fakes.use_case().accept(changed, authorize=fakes.authorize)

    assert caught.value.field == "idempotency_key"
    assert caught.value.existing_id == "first-id"
    assert "admit" not in fakes.steps and fakes.stored == []


async def test_a_lost_insert_race_answers_as_a_replay_of_the_winner() -> None:
    sent = request(idempotency_key="k-1")
    fakes = Fakes(lose_race=True, winner=stored_row(sent, message_id="winner-id"))

    result = await fakes.use_case().accept(sent, authorize=fakes.authorize)

    assert isinstance(result, Replayed) and result.message.id == "winner-id"
    assert fakes.steps[-2:] == ["store", "find_by_idempotency_key"]
    assert fakes.published == []


async def test_a_lost_race_with_a_different_request_is_already_exists() -> None:
    fakes = Fakes(lose_race=True, winner=stored_row(request(idempotency_key="k-1", subject="Other")))

    with pytest.raises(AlreadyExists):
        await fakes.use_case().accept(request(idempotency_key="k-1"), authorize=fakes.authorize)

    assert fakes.published == []


async def test_a_rate_limited_send_stores_and_publishes_nothing() -> None:
    fakes = Fakes(over_quota=True)

    with pytest.raises(RateLimited):
        await fakes.use_case().accept(request(), authorize=fakes.authorize)

    assert fakes.steps == ["authorize", "clock", "admit"]


async def test_a_send_time_out_of_range_is_refused_before_render_and_admission() -> None:
    sent = request()
    sent.send_time.FromDatetime(NOW + timedelta(days=31))
    fakes = Fakes()

    with pytest.raises(InvalidArgument) as caught:
        await fakes.use_case().accept(sent, authorize=fakes.authorize)

    assert [f for f, _ in caught.value.violations] == ["send_time"]
    assert fakes.steps == ["authorize", "clock"]


async def test_suppressed_recipients_are_stored_suppressed_and_an_all_suppressed_message_is_done() -> None:
    fakes = Fakes(suppressed={"a@example.org", "b@example.org"})

    result = await fakes.use_case().accept(
        request("a@example.org", "b@example.org"), authorize=fakes.authorize
    )

    assert isinstance(result, Accepted)
    assert [state for _, _, state in result.recipients] == [RecipientState.SUPPRESSED] * 2
    message, events = fakes.stored[0]
    assert message.state is MessageState.DONE
    assert [s for _, _, s in message.recipients] == [RecipientState.SUPPRESSED] * 2
    assert [e.event.type for e in events] == [event_pb2.EVENT_TYPE_SUPPRESSED] * 2
    # The suppressed events still go out; there is nothing to route.
    assert fakes.published == [(str(MESSAGE_ID), events, False)]


async def test_a_partly_suppressed_message_is_routed_for_the_rest() -> None:
    fakes = Fakes(suppressed={"b@example.org"})

    await fakes.use_case().accept(request("a@example.org", "b@example.org"), authorize=fakes.authorize)

    message, events = fakes.stored[0]
    assert message.state is MessageState.ACCEPTED
    assert [s for _, _, s in message.recipients] == [RecipientState.ACCEPTED, RecipientState.SUPPRESSED]
    assert [e.event.recipient for e in events] == ["a@example.org", "b@example.org"]
    assert fakes.published[0][2] is True


async def test_a_scheduled_message_is_stored_scheduled_and_not_routed_now() -> None:
    sent = request()
    send_time = NOW + timedelta(hours=2)
    sent.send_time.FromDatetime(send_time)
    fakes = Fakes()

    result = await fakes.use_case().accept(sent, authorize=fakes.authorize)

    assert isinstance(result, Accepted)
    assert [s for _, _, s in result.recipients] == [RecipientState.SCHEDULED]
    message, events = fakes.stored[0]
    assert message.state is MessageState.ACCEPTED
    assert message.send_time == send_time
    # The router's sweeper routes it at its send time.
    assert message.route_due_time == send_time
    assert [e.event.type for e in events] == [event_pb2.EVENT_TYPE_SCHEDULED]
    assert fakes.published == [(str(MESSAGE_ID), events, False)]


async def test_sandbox_comes_from_the_tenant_or_the_request() -> None:
    tenant_sandbox = Fakes(sandbox=True)
    await tenant_sandbox.use_case().accept(request(), authorize=tenant_sandbox.authorize)
    request_sandbox = Fakes()
    await request_sandbox.use_case().accept(request(sandbox=True), authorize=request_sandbox.authorize)
    neither = Fakes()
    await neither.use_case().accept(request(), authorize=neither.authorize)

    assert [f.stored[0][0].sandbox for f in (tenant_sandbox, request_sandbox, neither)] == [True, True, False]
