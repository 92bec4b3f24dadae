-- Dead letters (issue 11): the events a consumer gave up on, kept with their
-- error in the consuming service's own schema, so that an admin can list them
-- and replay them (`hotline deadletters`). This table is the record; nothing
-- else holds a consumer's dead letters.
CREATE TABLE dead_letters (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- NULL when the message could not be decoded, or its id was no UUID.
    event_id         uuid,
    -- The event type (routing key).
    event_type       text        NOT NULL,
    -- As the envelope carried it, malformed or not: it may be the cause.
    ticket_id        text,
    -- The message as delivered, republished as is by a replay.
    envelope         bytea       NOT NULL,
    error            text        NOT NULL,
    attempts         integer     NOT NULL,
    -- W3C trace context of the delivery, carried on by a replay.
    traceparent      text,
    tracestate       text,
    dead_lettered_at timestamptz NOT NULL DEFAULT now(),
    -- Set once, by the replay that put it back on the service's queue.
    replayed_at      timestamptz,
    replayed_by      text
);

ALTER TABLE dead_letters ALTER COLUMN envelope SET COMPRESSION lz4;

-- The gauge counts, and `--all` replays, the rows still waiting.
CREATE INDEX dead_letters_waiting ON dead_letters (id) WHERE replayed_at IS NULL;

-- An outbox row naming a service goes to that service's queue alone
-- (through the default exchange), not to every queue bound to its type: a
-- replayed dead letter must reach only the consumer that gave up on it.
ALTER TABLE outbox ADD COLUMN service text;
