-- policy: key notes, per-stream limits, and the shared state that makes limits exact across
-- policy replicas. Kept in PostgreSQL (already run, already transactional) rather than a new
-- server: one conditional UPDATE per limit decides atomically, whichever replica asks.
ALTER TABLE api_keys ADD COLUMN display_name text NOT NULL DEFAULT '';
CREATE INDEX api_keys_tenant ON api_keys (tenant_id, create_time DESC);

CREATE TABLE tenant_limits (
    tenant_id             uuid NOT NULL REFERENCES tenants (id),
    stream                text NOT NULL,  -- '*' is the tenant's total over all streams
    recipients_per_second double precision NOT NULL DEFAULT 0,
    burst                 integer NOT NULL DEFAULT 0,
    recipients_per_day    bigint NOT NULL DEFAULT 0,
    recipients_per_month  bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, stream)
);

-- GCRA: the theoretical arrival time of the next recipient, per tenant and stream.
CREATE TABLE rate_state (
    tenant_id uuid NOT NULL,
    stream    text NOT NULL,
    tat       timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, stream)
);

-- Recipients admitted per UTC day and month. One row per tenant, stream and period.
CREATE TABLE quota_usage (
    tenant_id    uuid NOT NULL,
    stream       text NOT NULL,
    period       text NOT NULL,  -- 'day' or 'month'
    period_start date NOT NULL,
    used         bigint NOT NULL,
    PRIMARY KEY (tenant_id, stream, period, period_start)
);
