-- Mail out is queued in the transaction that decides it and sent once that
-- transaction has committed, by whichever intake process leases it first
-- (like the pager's deliveries): a rolled-back transaction sends nothing,
-- and a slow relay holds no transaction and no consumer.
ALTER TABLE outgoing
    DROP CONSTRAINT outgoing_state_check,
    ADD CONSTRAINT outgoing_state_check CHECK (state IN ('pending', 'sent', 'failed')),
    ADD COLUMN subject text NOT NULL DEFAULT '',
    ADD COLUMN body text NOT NULL DEFAULT '',
    -- An acknowledgement: `Auto-Submitted: auto-replied`.
    ADD COLUMN automatic boolean NOT NULL DEFAULT false,
    ADD COLUMN attempts integer NOT NULL DEFAULT 0,
    ADD COLUMN next_attempt_at timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN lease_until timestamptz,
    -- Set when the relay refused the mail for good and the ticket is still
    -- to be told: the note is retried, the mail is not.
    ADD COLUMN refused text;
-- `at`: when it was queued, then when it was sent or given up on.
CREATE INDEX outgoing_due ON outgoing (next_attempt_at) WHERE state = 'pending';
