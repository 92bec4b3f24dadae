-- The bus tables every service schema carries (ARCHITECTURE §6).

-- Transactional outbox: written in the same transaction as the state change,
-- published by the relay, deleted once RabbitMQ has confirmed it. The relay
-- selects by presence, never by an id watermark, so a row committed out of id
-- order is never skipped.
CREATE TABLE outbox (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id    uuid        NOT NULL,
    routing_key text        NOT NULL,
    envelope    bytea       NOT NULL,
    -- W3C trace context of the writer, sent as AMQP headers.
    traceparent text,
    tracestate  text,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Inbox: the ids of the events a consumer has applied, recorded in the same
-- transaction as the effect. A duplicate delivery finds its id and does nothing.
CREATE TABLE inbox (
    event_id    uuid        PRIMARY KEY,
    event_type  text        NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);

-- The last applied version of each ticket, so an older fact arriving late is
-- ignored.
CREATE TABLE applied_versions (
    ticket_id uuid   PRIMARY KEY,
    version   bigint NOT NULL
);
