-- events: tenant-level events (WEBHOOK_DISABLED) belong to no message.
ALTER TABLE events ALTER COLUMN message_id DROP NOT NULL;
-- The trace context (W3C traceparent) current when the event was stored, so the webhook POST is a
-- client span in the message's trace however late it is made.
ALTER TABLE webhook_deliveries ADD COLUMN trace_context text NOT NULL DEFAULT '';
-- Fan-out looks up a tenant's enabled webhooks for every stored event.
CREATE INDEX webhooks_tenant_enabled ON webhooks (tenant_id) WHERE enabled;
