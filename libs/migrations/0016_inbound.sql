-- The inbound listener's counters: reports taken (bounced, complained), and mail dropped
-- (malformed, unmatched, ignored, duplicate), per kind, so an operator (and a test) can see what
-- the listener threw away without reading logs. One row per kind, incremented in place.
CREATE TABLE inbound_counters (
    name        text PRIMARY KEY,
    count       bigint NOT NULL DEFAULT 0,
    update_time timestamptz NOT NULL DEFAULT now()
);
