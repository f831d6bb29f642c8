"""Pipeline states: one definition, derived from the public enum, matching the schema's checks."""

from __future__ import annotations

from pathlib import Path

from postwire.v1 import message_pb2

from libs.mail.states import PENDING_STATES, TERMINAL_STATES, MessageState, RecipientState, sql_list

MIGRATION = Path(__file__).parents[2] / "libs/migrations/0018_state_checks_and_request_ids.sql"


def test_every_public_recipient_state_has_one_stored_value_and_back() -> None:
    public = {v for v in message_pb2.RecipientState.values() if v != message_pb2.RECIPIENT_STATE_UNSPECIFIED}
    assert {s.proto for s in RecipientState} == public
    assert RecipientState.QUEUED == "queued"
    assert RecipientState("deferred").proto == message_pb2.RECIPIENT_STATE_DEFERRED


def test_pending_and_terminal_split_every_state() -> None:
    assert PENDING_STATES | TERMINAL_STATES == set(RecipientState)
    assert not PENDING_STATES & TERMINAL_STATES
    assert RecipientState.DELIVERED in TERMINAL_STATES and RecipientState.DEFERRED in PENDING_STATES


def test_the_schema_checks_list_exactly_the_enums() -> None:
    sql = MIGRATION.read_text()
    messages = sql.split("messages_state_known", 1)[1].split("NOT VALID", 1)[0]
    recipients = sql.split("recipients_state_known", 1)[1].split("NOT VALID", 1)[0]
    assert {s for s in MessageState if f"'{s}'" in messages} == set(MessageState)
    assert messages.count("'") == 2 * len(MessageState)
    assert {s for s in RecipientState if f"'{s}'" in recipients} == set(RecipientState)
    assert recipients.count("'") == 2 * len(RecipientState)


def test_sql_list_keeps_the_order_a_partial_index_was_written_in() -> None:
    assert sql_list(RecipientState.QUEUED, RecipientState.DEFERRED) == "'queued', 'deferred'"
