-- Bounded retries (libs.stage_retry): failures that are not an outage count where the stage's
-- state lives, because sweepers re-publish with fresh JetStream ids and a delivery count would
-- start again at one. `failure_reason` is "<stage>: <error class>", shown by GetMessage.
ALTER TABLE messages ADD COLUMN route_failures integer NOT NULL DEFAULT 0;
ALTER TABLE recipients ADD COLUMN stage_failures integer NOT NULL DEFAULT 0;
ALTER TABLE recipients ADD COLUMN failure_reason text;
ALTER TABLE event_outbox ADD COLUMN failures integer NOT NULL DEFAULT 0;
ALTER TABLE event_outbox ADD COLUMN failure_reason text;
