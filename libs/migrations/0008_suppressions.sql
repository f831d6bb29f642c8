-- policy: per-tenant suppression list. grp '' means all mail; otherwise one unsubscribe group.
-- address is stored lowercased: suppression matches case-insensitively.
CREATE TABLE suppressions (
    tenant_id         uuid NOT NULL REFERENCES tenants (id),
    address           text NOT NULL,
    grp               text NOT NULL DEFAULT '',
    reason            smallint NOT NULL,  -- postwire.v1.SuppressionReason
    source_message_id uuid,
    create_time       timestamptz NOT NULL DEFAULT now(),
    expire_time       timestamptz,
    PRIMARY KEY (tenant_id, address, grp)
);
CREATE INDEX suppressions_reason ON suppressions (tenant_id, reason, address, grp);
