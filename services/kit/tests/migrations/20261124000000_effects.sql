-- What the test consumer applied: one row per applied event.
CREATE TABLE effects (
    event_id  uuid   PRIMARY KEY,
    ticket_id uuid,
    version   bigint NOT NULL
);
