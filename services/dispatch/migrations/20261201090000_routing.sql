-- Routing (ARCHITECTURE §13): tickets as dispatch sees them from ticket
-- events and entitlements (never from other services' tables), and the last
-- decision on each ticket.

-- One row per ticket not resolved or closed, the snapshot of its last event.
CREATE TABLE tickets (
    id             uuid PRIMARY KEY,
    -- "HL-10001".
    number         text NOT NULL,
    priority       text NOT NULL CHECK (priority IN ('low', 'normal', 'high', 'urgent')),
    created_at     timestamptz NOT NULL,
    -- Set while the ticket awaits a response.
    awaiting_since timestamptz,
    -- Lower-case (a person's email, as routing assigns); null: nobody.
    assignee       text,
    -- When routing saw it given to the assignee: a person who left after
    -- it has it moved; one given it while away keeps it (by hand, on purpose).
    assigned_at    timestamptz,
    -- When it last became waiting (awaiting, nobody's): overflow counts from it.
    queued_at      timestamptz,
    -- Routing's decision sent to tickets, until ticket.assigned shows an
    -- assignment (ours or a person's) or tickets refuses it: counted
    -- against that person's capacity meanwhile.
    assigning_to   text,
    assigning_at   timestamptz,
    -- Why routing could not place it at its last try, in words.
    reason         text
);
-- The queue.
CREATE INDEX tickets_waiting ON tickets (awaiting_since)
    WHERE awaiting_since IS NOT NULL AND assignee IS NULL;
-- Capacity: awaiting tickets per person.
CREATE INDEX tickets_assigned ON tickets (assignee)
    WHERE awaiting_since IS NOT NULL AND assignee IS NOT NULL;
CREATE INDEX tickets_number ON tickets (number);

-- What contracts resolved for a ticket (entitlement.resolved may arrive
-- before ticket.created: kept apart, joined at routing).
CREATE TABLE entitlements (
    ticket_id  uuid PRIMARY KEY,
    -- The branch's region, lower-case; null: not known.
    region     text,
    -- The asset's model family, as contracts names it; null: no one asset.
    family     text,
    customer   text,
    resolved_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX entitlements_resolved_at ON entitlements (resolved_at);

-- Routing's last decision per ticket, kept after the ticket closes (for
-- `dispatch explain`) for DECISIONS_KEPT.
CREATE TABLE decisions (
    ticket_id  uuid PRIMARY KEY,
    number     text NOT NULL,
    decided_at timestamptz NOT NULL,
    -- Null: nobody could take it.
    assignee   text,
    reason     text NOT NULL,
    skills     text[] NOT NULL DEFAULT '{}',
    region     text,
    moved_from text,
    overflow   boolean NOT NULL DEFAULT false
);
CREATE INDEX decisions_decided_at ON decisions (decided_at);
CREATE INDEX decisions_number ON decisions (number);

-- When a sweep found the person stated online or away with no heartbeat:
-- their tickets move a grace period after it. Cleared when they are seen
-- alive again or state a presence.
ALTER TABLE people ADD COLUMN lapsed_at timestamptz;
