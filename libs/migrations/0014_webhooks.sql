-- events: webhook endpoints and one delivery row per (webhook, event). Secrets are stored sealed
-- with the token key ring (libs/webhook_secrets.py), never hashed: they must sign every request.
-- Deliveries are retried from here (exponential back-off for at least 72 h, then dead-lettered),
-- never parked in JetStream.
CREATE TABLE webhooks (
    id                    uuid PRIMARY KEY,
    tenant_id             uuid NOT NULL REFERENCES tenants (id),
    url                   text NOT NULL,
    event_types           smallint[] NOT NULL,   -- postwire.v1.EventType values
    streams               text[] NOT NULL DEFAULT '{}',
    tags                  text[] NOT NULL DEFAULT '{}',
    enabled               boolean NOT NULL DEFAULT true,
    disabled_reason       text NOT NULL DEFAULT '',
    secret                text NOT NULL,          -- sealed whsec_ secret
    previous_secret       text,                   -- sealed, signs beside the new one until:
    previous_expire_time  timestamptz,
    -- Start of the current unbroken run of failed attempts (NULL after any success): the
    -- disabling clock.
    failing_since         timestamptz,
    create_time           timestamptz NOT NULL DEFAULT now(),
    update_time           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhooks_tenant ON webhooks (tenant_id, create_time, id);

CREATE TABLE webhook_deliveries (
    webhook_id         uuid NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event_id           text NOT NULL,
    tenant_id          uuid NOT NULL,
    event_type         smallint NOT NULL,
    state              smallint NOT NULL DEFAULT 1,  -- postwire.v1.WebhookDeliveryState
    attempts           integer NOT NULL DEFAULT 0,
    next_attempt_time  timestamptz NOT NULL DEFAULT now(),
    lease_until        timestamptz,
    last_status        integer NOT NULL DEFAULT 0,
    last_response      text NOT NULL DEFAULT '',
    last_latency_ms    integer NOT NULL DEFAULT 0,
    last_attempt_time  timestamptz,
    create_time        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (webhook_id, event_id)
);
-- Due work only: the dispatcher's claim never scans delivered or dead-lettered rows.
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_time) WHERE state = 1;
CREATE INDEX webhook_deliveries_log ON webhook_deliveries (webhook_id, create_time DESC, event_id);
