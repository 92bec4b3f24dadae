-- Every PBX event accepted, once per call and event: a PBX retrying is
-- answered and changes nothing.
CREATE TABLE cti_events (
    call_id     text NOT NULL,
    event       text NOT NULL,
    fields      jsonb NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (call_id, event)
);

-- Each call as the events describe it, and what became of it.
CREATE TABLE calls (
    call_id       text PRIMARY KEY,
    direction     text NOT NULL CHECK (direction IN ('in', 'out')),
    customer      text NOT NULL,
    started_at    timestamptz NOT NULL,
    answered_at   timestamptz,
    agent         text,
    ended_at      timestamptz,
    cause         text,
    outcome       text,
    -- A blocked caller, rejected: the call records nothing.
    blocked       boolean NOT NULL DEFAULT false,
    -- Set once tickets has it: the ticket the call was recorded on, or
    -- empty when there was none to record it on.
    ticket_number text,
    forwarded_at  timestamptz
);
