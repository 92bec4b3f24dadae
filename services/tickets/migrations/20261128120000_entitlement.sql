-- Whom a ticket is for and what covers it, as `contracts` resolved it from
-- the ticket's contact and the serials it names (`entitlement.resolved`).
-- All NULL until then; names are kept as they were when resolved, so a
-- ticket shows its customer without asking `contracts`.
ALTER TABLE tickets
    ADD COLUMN customer_id        uuid,
    ADD COLUMN customer_name      text,
    ADD COLUMN project_id         uuid,
    ADD COLUMN project_name       text,
    ADD COLUMN asset_serial       text,
    ADD COLUMN coverage           text CHECK (coverage IN ('none', 'warranty', 'contract')),
    ADD COLUMN covered_until      date,
    ADD COLUMN entitlement_reason text,
    -- When `contracts` resolved it: an older answer arriving late is ignored.
    ADD COLUMN entitled_at        timestamptz,
    ADD CHECK ((coverage IS NULL) = (entitled_at IS NULL));

-- `tickets list --customer`: by id, or by name (case-blind, whole name).
CREATE INDEX tickets_customer ON tickets (customer_id, number) WHERE customer_id IS NOT NULL;
CREATE INDEX tickets_customer_name ON tickets (lower(customer_name), number)
    WHERE customer_name IS NOT NULL;
