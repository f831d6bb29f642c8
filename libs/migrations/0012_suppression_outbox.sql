-- events: suppressions the platform owes policy (hard bounces now, complaints later), written in
-- the transaction that stores the event that caused them and sent by the events service's drainer
-- through PolicyService.RecordSuppressions. A row is deleted once policy has it and is otherwise
-- kept, with a growing back-off, for as long as it takes: a suppression is never given up.
-- One row per event, so a redelivered event cannot queue its suppression twice.
CREATE TABLE suppression_outbox (
    event_id          text PRIMARY KEY,
    tenant_id         uuid NOT NULL,
    address           text NOT NULL,
    reason            smallint NOT NULL,  -- postwire.v1.SuppressionReason
    source_message_id uuid,
    -- Why, for an operator reading the table ("hard bounce: 550 5.1.1 User unknown").
    detail            text NOT NULL DEFAULT '',
    create_time       timestamptz NOT NULL DEFAULT now(),
    next_attempt_time timestamptz NOT NULL DEFAULT now(),
    attempts          integer NOT NULL DEFAULT 0,
    last_error        text  -- error class of the last failed attempt, never its message
);
CREATE INDEX suppression_outbox_due ON suppression_outbox (next_attempt_time);
