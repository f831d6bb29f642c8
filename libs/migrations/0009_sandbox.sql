-- submission/mta_worker: a sandboxed message runs every step, events included, but mta_worker
-- never opens an SMTP connection for it.
ALTER TABLE messages ADD COLUMN sandbox boolean NOT NULL DEFAULT false;
