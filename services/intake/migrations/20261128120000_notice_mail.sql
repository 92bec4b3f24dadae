-- Notices from `contracts` (`contracts.notice`) go out through the same
-- queue, worker, retries and relay as replies and acknowledgements, keyed
-- `notice:<event id>` so a redelivered event queues nothing twice. A
-- notice belongs to no ticket: its `ticket_number` is empty, and its
-- Message-ID threads nothing (a branch's answer opens a ticket of its own).
ALTER TABLE outgoing
    DROP CONSTRAINT outgoing_kind_check,
    ADD CONSTRAINT outgoing_kind_check CHECK (kind IN ('reply', 'ack', 'notice'));
