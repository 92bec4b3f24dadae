-- The baseline the create-tickets target is measured against: one
-- transaction inserting a ticket row and an outbox row, nothing else.
BEGIN;
INSERT INTO tickets.tickets (id, status, priority, channel, subject, contact, awaiting_since, created_at, updated_at)
VALUES (gen_random_uuid(), 'new', 'normal', 'api', 'Camera offline', 'ops@example.test', now(), now(), now());
INSERT INTO tickets.outbox (event_id, routing_key, envelope)
VALUES (gen_random_uuid(), 'ticket.created', '\x0a0b0c0d');
END;
