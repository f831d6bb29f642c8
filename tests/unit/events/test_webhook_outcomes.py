"""What the dispatcher costs per delivery: attempts that finish together are recorded in one call
of the store (one statement, one transaction), and a webhook's sealed secret is unsealed once,
not per delivery. Each attempt still returns only after its own outcome is recorded."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from datetime import timedelta

from postwire.v1 import event_pb2

from libs.http_guard import HttpResponse
from libs.token_keys import KeyRing
from libs.webhook_secrets import WebhookSecrets
from services.events.webhook_records import Claim, Delivered
from tests.unit.events.dispatching import make_dispatcher


class CountingSecrets(WebhookSecrets):
    def __init__(self) -> None:
        super().__init__(KeyRing.from_env({}))
        self.opened = 0

    def open(self, sealed: str, webhook_id: str) -> str:
        self.opened += 1
        return super().open(sealed, webhook_id)


SECRETS = CountingSecrets()
_, SEALED = SECRETS.new("hook")


def _claim(n: int) -> Claim:
    event = event_pb2.Event(id=f"evt-{n}", type=event_pb2.EVENT_TYPE_DELIVERED, message_id="m")
    event.create_time.GetCurrentTime()
    return Claim("hook", event.id, 0, "", "https://hook.example/in", SEALED, None, event.SerializeToString())


class RecordingStore:
    def __init__(self, due: list[Claim]) -> None:
        self.due = due
        self.calls: list[list[str]] = []

    async def claim(self, *, limit: int, lease: timedelta, exclude: Sequence[str]) -> list[Claim]:
        taken, self.due = self.due[:limit], self.due[limit:]
        return taken

    async def delivered_many(self, outcomes: Sequence[Delivered]) -> list[None]:
        await asyncio.sleep(0)
        self.calls.append([o.claim.event_id for o in outcomes])
        return [None] * len(outcomes)


class Instant:
    def __init__(self) -> None:
        self.signatures: list[str] = []

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> HttpResponse:
        self.signatures.append(headers["webhook-signature"])
        return HttpResponse(200, b"ok", 0.0)


async def test_attempts_that_finish_together_are_recorded_in_one_call_with_one_unsealing() -> None:
    store = RecordingStore([_claim(n) for n in range(20)])
    http = Instant()
    dispatcher = make_dispatcher(store, http, SECRETS, timeout=5, max_in_flight=64, per_webhook=64)
    SECRETS.opened = 0
    assert await dispatcher.tick() == 20
    await dispatcher.stop()
    recorded = [event_id for call in store.calls for event_id in call]
    assert sorted(recorded) == sorted(f"evt-{n}" for n in range(20))
    assert len(store.calls) <= 2  # the first attempt's flush may leave before the others queue
    assert len(http.signatures) == 20 and len(set(http.signatures)) >= 1
    assert SECRETS.opened == 1


class ReleasingStore(RecordingStore):
    def __init__(self) -> None:
        super().__init__([])
        self.claims = 0
        self.released: list[str] = []

    async def claim(self, *, limit: int, lease: timedelta, exclude: Sequence[str]) -> list[Claim]:
        self.claims += 1
        return []

    async def release_many(self, claims: Sequence[Claim]) -> None:
        self.released.extend(c.event_id for c in claims)


async def test_deliveries_leased_at_storage_are_sent_without_a_claim_and_the_excess_released() -> None:
    # The events store leases the delivery rows of newly stored events in their transaction and
    # offers them: no claim query for a first attempt. What the limits do not allow now
    # waits in memory for a slot; at stop it goes back (lease cleared) rather than waiting for
    # its lease to expire.
    store = ReleasingStore()
    dispatcher = make_dispatcher(store, Instant(), SECRETS, timeout=5, max_in_flight=64, per_webhook=4)
    dispatcher.offer([_claim(n) for n in range(6)])
    await dispatcher.stop()
    assert store.claims == 0
    assert sorted(e for call in store.calls for e in call) == [f"evt-{n}" for n in range(4)]
    assert sorted(store.released) == ["evt-4", "evt-5"]


async def test_finished_attempts_do_not_trigger_a_claim_unless_the_limits_held_rows_back() -> None:
    # Each finished attempt used to wake the claim loop, so a handed-over first attempt still
    # cost a claim query (an empty one) right after it. Only a loop the limits held back is
    # woken; otherwise retries are found by the regular poll.
    store = ReleasingStore()
    dispatcher = make_dispatcher(
        store, Instant(), SECRETS, timeout=5, max_in_flight=64, per_webhook=4, interval=30
    )
    dispatcher.start()
    await asyncio.sleep(0.05)
    assert store.claims == 1  # the loop's first look
    dispatcher.offer([_claim(n) for n in range(3)])
    await asyncio.sleep(0.1)
    assert sorted(e for call in store.calls for e in call) == [f"evt-{n}" for n in range(3)]
    assert store.claims == 1
    await dispatcher.stop()
