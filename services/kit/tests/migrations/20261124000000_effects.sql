-- What the test consumer applied: one row per application, with no unique
-- key, so an event applied twice shows as two rows.
CREATE TABLE effects (
    event_id  uuid   NOT NULL,
    ticket_id uuid,
    version   bigint NOT NULL
);
