-- Routing under load (issue 13's benchmark): a round reads only the tickets
-- it may act on. Decisions on their way (and those refused, left alone for
-- a while) are few: the resends and the round's next deadline find them here
-- rather than by reading every awaiting ticket.
CREATE INDEX tickets_assigning ON tickets (assigning_at) WHERE assigning_at IS NOT NULL;
