-- What the tickets service's create does, as pgbench SQL: a number from the
-- sequence, then ticket, first article and two outbox rows in one statement.
SELECT nextval('tickets.ticket_numbers') AS number \gset
WITH ticket AS (
    INSERT INTO tickets.tickets (id, number, status, priority, channel, subject, contact,
                                 awaiting_since, created_at, updated_at)
    VALUES (gen_random_uuid(), :number, 'new', 'normal', 'api', 'Camera offline', 'ops@example.test',
            now(), now(), now())
    RETURNING id
), article AS (
    INSERT INTO tickets.articles (id, ticket_id, kind, body, author, created_at)
    SELECT gen_random_uuid(), id, 'customer_message', 'No picture since 02:00', 'ops@example.test', now()
    FROM ticket
)
INSERT INTO tickets.outbox (event_id, routing_key, envelope)
SELECT gen_random_uuid(), k, '\x0a0b0c0d' FROM ticket, UNNEST(ARRAY['ticket.created', 'ticket.awaiting_response']) AS k;
