-- policy: sending domains. Private DKIM keys are stored only encrypted (AES-GCM with a key from
-- POSTWIRE_SECRET_KEY, the domain's id as associated data so a row's key cannot be moved to another).
CREATE TABLE domains (
    id                 uuid PRIMARY KEY,
    tenant_id          uuid NOT NULL REFERENCES tenants (id),
    name               text NOT NULL,
    rsa_selector       text NOT NULL,
    rsa_private        bytea NOT NULL,
    rsa_public         text NOT NULL,
    ed25519_selector   text NOT NULL,
    ed25519_private    bytea NOT NULL,
    ed25519_public     text NOT NULL,
    verified           boolean NOT NULL DEFAULT false,
    record_status      jsonb NOT NULL DEFAULT '{}',
    create_time        timestamptz NOT NULL DEFAULT now(),
    check_time         timestamptz,
    verify_time        timestamptz
);
CREATE UNIQUE INDEX domains_tenant_name ON domains (tenant_id, name);
