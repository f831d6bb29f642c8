-- One database, tables grouped by the service that owns their writes.
-- The mail pipeline tables (messages, recipients) are the claim-check store: submission inserts,
-- router and mta_worker advance state. Passing bodies between stages over gRPC would cost a hop
-- per stage (PERFORMANCE.md) and NATS payloads are capped, so stages share these rows instead.

-- policy: tenants and API keys (only a hash of each key is kept).
CREATE TABLE tenants (
    id          uuid PRIMARY KEY,
    name        text NOT NULL,
    sandbox     boolean NOT NULL DEFAULT false,
    create_time timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (id),
    prefix      text NOT NULL UNIQUE,
    key_hash    bytea NOT NULL UNIQUE,
    scopes      text[] NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now(),
    revoke_time timestamptz
);

-- template: templates and their immutable versions.
CREATE TABLE templates (
    id             uuid PRIMARY KEY,
    tenant_id      uuid NOT NULL,
    name           text NOT NULL,
    latest_version integer NOT NULL DEFAULT 1,
    create_time    timestamptz NOT NULL DEFAULT now(),
    delete_time    timestamptz
);
CREATE UNIQUE INDEX templates_tenant_name ON templates (tenant_id, name) WHERE delete_time IS NULL;

CREATE TABLE template_versions (
    template_id uuid NOT NULL REFERENCES templates (id),
    version     integer NOT NULL,
    subject     text NOT NULL,
    html_body   text NOT NULL,
    text_body   text NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (template_id, version)
);

-- mail pipeline.
CREATE TABLE messages (
    id                uuid PRIMARY KEY,
    tenant_id         uuid NOT NULL,
    idempotency_key   text,
    request_hash      bytea NOT NULL,
    request           bytea NOT NULL,          -- the validated SendEmailRequest
    stream            text NOT NULL,
    tags              text[] NOT NULL DEFAULT '{}',
    metadata          jsonb NOT NULL DEFAULT '{}',
    state             text NOT NULL,           -- accepted | routed | failed
    send_time         timestamptz,
    route_due_time    timestamptz NOT NULL,    -- when the router should have it; sweeper key
    rfc822_message_id text,
    envelope_from     text,
    mime              bytea,                   -- built by the router
    create_time       timestamptz NOT NULL DEFAULT now(),
    update_time       timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX messages_idempotency ON messages (tenant_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX messages_route_due ON messages (route_due_time) WHERE state = 'accepted';

CREATE TABLE recipients (
    message_id         uuid NOT NULL REFERENCES messages (id),
    position           integer NOT NULL,
    address            text NOT NULL,
    kind               smallint NOT NULL,
    -- accepted | scheduled | queued | deferred | delivered | bounced | suppressed | failed | expired
    state              text NOT NULL,
    attempts           integer NOT NULL DEFAULT 0,
    first_attempt_time timestamptz,
    next_attempt_time  timestamptz,
    lease_until        timestamptz,
    last_code          integer,
    last_enhanced      text,
    last_text          text,
    update_time        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (message_id, position)
);
CREATE INDEX recipients_due ON recipients (next_attempt_time) WHERE state IN ('queued', 'deferred');

-- events: producers write an outbox row in the same transaction as the state change; the events
-- service stores the event and deletes the row, so an event outlives a failed publish or a
-- wiped JetStream store.
CREATE TABLE event_outbox (
    event_id     text PRIMARY KEY,
    tenant_id    uuid NOT NULL,
    subject      text NOT NULL,
    payload      bytea NOT NULL,
    create_time  timestamptz NOT NULL DEFAULT now(),
    publish_time timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX event_outbox_publish ON event_outbox (publish_time);

CREATE TABLE events (
    seq         bigserial PRIMARY KEY,
    event_id    text NOT NULL UNIQUE,
    tenant_id   uuid NOT NULL,
    message_id  uuid NOT NULL,
    recipient   text NOT NULL,
    type        smallint NOT NULL,
    create_time timestamptz NOT NULL,
    payload     bytea NOT NULL
);
CREATE INDEX events_tenant_seq ON events (tenant_id, seq);
CREATE INDEX events_tenant_message ON events (tenant_id, message_id, seq);
CREATE INDEX events_tenant_recipient ON events (tenant_id, lower(recipient), seq);
CREATE INDEX events_tenant_time ON events (tenant_id, create_time);
