"""The dispatcher's isolation: a webhook whose endpoint hangs holds at most `per_webhook` slots
and is not even claimed once saturated, so another tenant's webhook is sent at once."""

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

SECRETS = WebhookSecrets(KeyRing.from_env({}))  # the dev key ring


def _claim(webhook: str, n: int) -> Claim:
    event = event_pb2.Event(id=f"{webhook}-{n}", type=event_pb2.EVENT_TYPE_DELIVERED, message_id="m")
    event.create_time.GetCurrentTime()
    _, sealed = SECRETS.new(webhook)
    return Claim(
        webhook, event.id, 0, "", f"https://{webhook}.example/hook", sealed, None, event.SerializeToString()
    )


class FakeStore:
    def __init__(self, due: list[Claim]) -> None:
        self.due = due
        self.excluded: list[list[str]] = []
        self.sent: list[str] = []
        self.released: list[str] = []

    async def claim(self, *, limit: int, lease: timedelta, exclude: Sequence[str]) -> list[Claim]:
        self.excluded.append(list(exclude))
        taken = [c for c in self.due if c.webhook_id not in exclude][:limit]
        for c in taken:
            self.due.remove(c)
        return taken

    async def release_many(self, claims: Sequence[Claim]) -> None:
        self.released.extend(c.event_id for c in claims)
        self.due.extend(claims)

    async def delivered_many(self, outcomes: Sequence[Delivered]) -> list[None]:
        self.sent.extend(o.claim.event_id for o in outcomes)
        return [None] * len(outcomes)


class HangingHttp:
    """Endpoints of `slow` never answer (until released); the others answer 200 at once."""

    def __init__(self) -> None:
        self.slow_in_flight = 0
        self.release = asyncio.Event()

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> HttpResponse:
        if "slow" in url:
            self.slow_in_flight += 1
            await self.release.wait()
        return HttpResponse(200, b"", 0.0)


ALL = [_claim("slow", n) for n in range(10)] + [_claim("quick", 0)]


async def test_a_hanging_endpoint_holds_its_own_slots_only() -> None:
    store = FakeStore(list(ALL))
    http = HangingHttp()
    dispatcher = make_dispatcher(store, http, SECRETS, timeout=60, max_in_flight=8, per_webhook=4)
    # The first claim may be all slow rows: 4 are sent, the rest wait. From the next claim
    # on (the loop claims again at once) the saturated webhook is excluded and the quick one
    # goes out, however many slow rows are due.
    for _ in range(3):
        await dispatcher.tick()
        await asyncio.sleep(0.02)
    assert http.slow_in_flight == 4
    assert store.sent == ["quick-0"]
    assert store.excluded[1:] == [["slow"], ["slow"]]
    http.release.set()
    await dispatcher.stop()
    # The slow rows that waited in memory go back to the database for another replica.
    assert sorted(store.released) == sorted(f"slow-{n}" for n in range(4, 8))


async def test_a_burst_for_one_webhook_is_sent_in_order_without_going_back_to_the_database() -> None:
    store = FakeStore([])
    dispatcher = make_dispatcher(store, HangingHttp(), SECRETS, timeout=60, max_in_flight=8)
    burst = [_claim("quick", n) for n in range(30)]
    dispatcher.offer(burst)
    for _ in range(2000):
        await asyncio.sleep(0)
        if len(store.sent) == len(burst):
            break
    await dispatcher.stop()
    assert store.sent == [c.event_id for c in burst]
    assert store.excluded == [] and store.released == []
