-- One response clock per ticket (ARCHITECTURE §7). `next_at` is when the
-- scheduler acts next; the Redis due-index mirrors it and is rebuilt from here.
CREATE TABLE clocks (
    ticket_id       uuid PRIMARY KEY,
    ticket_version  bigint NOT NULL,
    number          text NOT NULL,
    subject         text NOT NULL,
    contact         text NOT NULL,
    channel         integer NOT NULL,
    priority        integer NOT NULL,
    awaiting_since  timestamptz,
    target_ms       bigint NOT NULL DEFAULT 0,
    due             timestamptz,
    breaches        integer NOT NULL DEFAULT 0,
    breached_at     timestamptz,
    step            integer NOT NULL DEFAULT 0,
    acknowledged_at timestamptz,
    acknowledged_by text,
    next_at         timestamptz,
    last_outcome    text,
    last_stopped_at timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX clocks_next_at ON clocks (next_at) WHERE next_at IS NOT NULL;
CREATE INDEX clocks_due ON clocks (due) WHERE awaiting_since IS NOT NULL;
CREATE INDEX clocks_number ON clocks (number);

-- Every escalation step fired, once: the key refuses a second one.
CREATE TABLE escalations (
    ticket_id uuid NOT NULL,
    breach    integer NOT NULL,
    step      integer NOT NULL,
    level     integer NOT NULL,
    due       timestamptz NOT NULL,
    fired_at  timestamptz NOT NULL,
    PRIMARY KEY (ticket_id, breach, step)
);

-- Response targets per priority; a priority without one gets the warranty
-- target from the configuration.
CREATE TABLE policies (
    priority   integer PRIMARY KEY,
    target_ms  bigint NOT NULL CHECK (target_ms > 0),
    updated_by text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
