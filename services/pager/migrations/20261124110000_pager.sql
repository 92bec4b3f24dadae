-- The pager's view of each breach (from sla.escalated / sla.cleared) and
-- its acknowledgement.
CREATE TABLE breaches (
    ticket_id       uuid NOT NULL,
    breach          integer NOT NULL,
    number          text NOT NULL,
    subject         text NOT NULL,
    contact         text NOT NULL,
    channel         integer NOT NULL,
    priority        integer NOT NULL,
    awaiting_since  timestamptz,
    due             timestamptz,
    level           integer NOT NULL DEFAULT 0,
    cleared_at      timestamptz,
    cleared_reason  text,
    acknowledged_at timestamptz,
    acknowledged_by text,
    acknowledged_via text,
    PRIMARY KEY (ticket_id, breach)
);
CREATE INDEX breaches_number ON breaches (number);

-- One message to one target: a work queue (`FOR UPDATE SKIP LOCKED`),
-- leased while it is being sent. The key makes a redelivered escalation
-- create nothing new.
CREATE TABLE deliveries (
    id              bigserial PRIMARY KEY,
    ticket_id       uuid NOT NULL,
    breach          integer NOT NULL,
    step            integer NOT NULL,
    level           integer NOT NULL,
    action          text NOT NULL,
    channel         text NOT NULL,
    target          text NOT NULL,
    destination     text NOT NULL,
    dedup_key       text NOT NULL,
    body            text NOT NULL,
    state           text NOT NULL DEFAULT 'pending',
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    lease_until     timestamptz,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    UNIQUE (ticket_id, breach, step, action, channel, target)
);
CREATE INDEX deliveries_pending ON deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX deliveries_ticket ON deliveries (ticket_id, id);

-- Every attempt to send a delivery.
CREATE TABLE attempts (
    delivery_id bigint NOT NULL REFERENCES deliveries (id),
    at          timestamptz NOT NULL,
    status      integer NOT NULL,
    error       text,
    latency_ms  integer NOT NULL
);
CREATE INDEX attempts_delivery ON attempts (delivery_id);

CREATE TABLE people (
    name        text PRIMARY KEY,
    email       text NOT NULL DEFAULT '',
    webhook_url text NOT NULL DEFAULT ''
);

CREATE TABLE schedules (
    name          text PRIMARY KEY,
    time_zone     text NOT NULL,
    participants  text[] NOT NULL,
    shift_seconds bigint NOT NULL CHECK (shift_seconds > 0),
    starts        timestamp NOT NULL
);

CREATE TABLE overrides (
    id        bigserial PRIMARY KEY,
    schedule  text NOT NULL REFERENCES schedules (name) ON DELETE CASCADE,
    person    text NOT NULL,
    starts_at timestamptz NOT NULL,
    ends_at   timestamptz NOT NULL CHECK (ends_at > starts_at)
);

-- Targets of each escalation level, in order: a schedule or a person.
CREATE TABLE level_targets (
    level    integer NOT NULL,
    position integer NOT NULL,
    schedule text,
    person   text,
    PRIMARY KEY (level, position),
    CHECK ((schedule IS NULL) <> (person IS NULL))
);
