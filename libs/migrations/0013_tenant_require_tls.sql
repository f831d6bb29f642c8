-- policy writes it through AdminService; mta_worker reads it: a tenant's mail goes out only over
-- TLS with a verified certificate, else it is deferred, never sent in plain text.
ALTER TABLE tenants ADD COLUMN require_tls boolean NOT NULL DEFAULT false;
