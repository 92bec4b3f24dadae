-- Tickets: the system of record of every reported fault.

-- Human numbers HL-10001 upward: unique and increasing (a rolled-back
-- create leaves a gap, never a duplicate).
CREATE SEQUENCE ticket_numbers START WITH 10001;

CREATE TABLE tickets (
    id              uuid        PRIMARY KEY,
    number          bigint      NOT NULL UNIQUE DEFAULT nextval('ticket_numbers'),
    -- Bumped by every change; carried by every event as ticket_version.
    version         bigint      NOT NULL DEFAULT 1,
    status          text        NOT NULL
        CHECK (status IN ('new', 'open', 'pending_customer', 'resolved', 'closed')),
    priority        text        NOT NULL CHECK (priority IN ('low', 'normal', 'high', 'urgent')),
    channel         text        NOT NULL CHECK (channel IN ('email', 'phone', 'web', 'api', 'onsite')),
    subject         text        NOT NULL CHECK (length(subject) BETWEEN 1 AND 500),
    contact         text,
    assignee        text,
    -- Set while the ticket awaits a response: when the unanswered contact came.
    awaiting_since  timestamptz,
    -- The same key always returns the same ticket.
    idempotency_key text        UNIQUE,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL
);

CREATE INDEX tickets_awaiting ON tickets (awaiting_since) WHERE awaiting_since IS NOT NULL;
CREATE INDEX tickets_status ON tickets (status, number);
CREATE INDEX tickets_assignee ON tickets (assignee, number) WHERE assignee IS NOT NULL;
CREATE INDEX tickets_contact ON tickets (contact, number) WHERE contact IS NOT NULL;

CREATE TABLE articles (
    id             uuid        PRIMARY KEY,
    ticket_id      uuid        NOT NULL REFERENCES tickets (id),
    kind           text        NOT NULL
        CHECK (kind IN ('customer_message', 'agent_reply', 'internal_note', 'call', 'onsite_arrival')),
    body           text        NOT NULL,
    author         text        NOT NULL,
    call_direction text        CHECK (call_direction IN ('in', 'out')),
    call_outcome   text        CHECK (call_outcome IN ('answered', 'missed', 'voicemail')),
    call_id        text,
    created_at     timestamptz NOT NULL,
    CHECK ((kind = 'call') = (call_direction IS NOT NULL AND call_outcome IS NOT NULL))
);

CREATE INDEX articles_ticket ON articles (ticket_id, created_at);
