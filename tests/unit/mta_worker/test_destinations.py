"""A destination (recipient domain) holds at most its share of a worker's SMTP slots."""

from __future__ import annotations

from services.mta_worker.destinations import DestinationSlots, destination


def test_the_destination_is_the_domain_case_folded() -> None:
    assert destination("Ada+x@Mail.Example.COM") == "mail.example.com"


def test_a_full_destination_refuses_while_others_still_get_slots() -> None:
    slots = DestinationSlots(2)
    assert slots.take(["slow.example"]) and slots.take(["slow.example"])
    assert not slots.take(["slow.example"])
    assert slots.take(["fast.example"])
    slots.give_back(["slow.example"])
    assert slots.take(["slow.example"])


def test_a_message_to_several_destinations_takes_one_slot_at_each_or_none() -> None:
    slots = DestinationSlots(1)
    assert slots.take(["a.example"])
    assert not slots.take(["a.example", "b.example"])
    assert slots.held("b.example") == 0
    assert slots.take(["b.example", "b.example", "c.example"])
    assert (slots.held("b.example"), slots.held("c.example")) == (1, 1)
    slots.give_back(["b.example", "c.example"])
    assert (slots.held("b.example"), slots.held("c.example")) == (0, 0)
