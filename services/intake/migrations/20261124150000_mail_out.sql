-- Every mail Hotline sent or gave up on, once per key: `reply:<article>`
-- for an agent's reply, `ack:<ticket>` for the acknowledgement of a new
-- ticket.
CREATE TABLE outgoing (
    key           text PRIMARY KEY,
    kind          text NOT NULL CHECK (kind IN ('reply', 'ack')),
    ticket_number text NOT NULL,
    recipient     text NOT NULL,
    message_id    text NOT NULL,
    state         text NOT NULL CHECK (state IN ('sent', 'failed')),
    error         text,
    at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX outgoing_acks ON outgoing (recipient, at) WHERE kind = 'ack';
