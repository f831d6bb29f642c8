-- One definition of the pipeline states (libs/mail/states.py) enforced where they are stored, so a
-- misspelt state is refused at the write instead of leaving a row no sweeper or query will match.
-- NOT VALID then VALIDATE: the check holds for new writes at once, and the scan of existing rows
-- takes only a SHARE UPDATE EXCLUSIVE lock, so senders keep writing during the migration.
ALTER TABLE messages ADD CONSTRAINT messages_state_known
    CHECK (state IN ('accepted', 'routed', 'done', 'failed', 'expired')) NOT VALID;
ALTER TABLE messages VALIDATE CONSTRAINT messages_state_known;
ALTER TABLE recipients ADD CONSTRAINT recipients_state_known
    CHECK (state IN ('accepted', 'scheduled', 'queued', 'deferred', 'delivered', 'bounced',
                     'suppressed', 'failed', 'expired')) NOT VALID;
ALTER TABLE recipients VALIDATE CONSTRAINT recipients_state_known;
COMMENT ON COLUMN messages.state IS 'libs.mail.states.MessageState';
COMMENT ON COLUMN recipients.state IS 'libs.mail.states.RecipientState (postwire.v1.RecipientState)';

-- AIP-155 request ids on Create methods (libs/request_ids.py): the first successful call's answer,
-- written in the same transaction as what it created, so a retry gets exactly that answer.
-- `owner` is the tenant, or 'admin' for AdminService; `response` is the serialized response,
-- sealed by the owning service when it carries a secret (a new API key, a webhook secret).
CREATE TABLE request_ids (
    owner       text NOT NULL,
    method      text NOT NULL,
    request_id  text NOT NULL,
    fingerprint bytea NOT NULL,
    response    bytea,
    create_time timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (owner, method, request_id)
);
CREATE INDEX request_ids_age ON request_ids (create_time);
