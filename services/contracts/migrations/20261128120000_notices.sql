-- Notices ahead of a warranty's or contract's end (issue 12, item 7): one
-- row per asset, kind and end date, so each end is announced once however
-- often or in how many processes the scan runs; an acceptance date that
-- moves gives a new end date, a new key, and so a new notice. The row and
-- the mail's event (`contracts.notice`, in the outbox) are written in one
-- transaction.
CREATE TABLE notices (
    asset_id    uuid NOT NULL REFERENCES assets (id),
    kind        text NOT NULL CHECK (kind IN ('warranty', 'contract')),
    -- The last day covered, as derived (warranty) or stored (contract)
    -- when the notice was decided.
    ends_on     date NOT NULL,
    branch_id   uuid NOT NULL REFERENCES branches (id),
    -- Where the mail went: the branch's notice address at the time.
    recipient   text NOT NULL,
    -- The `contracts.notice` event that carried the mail (one per branch
    -- and scan, listing every asset of that branch announced with it).
    event_id    uuid NOT NULL,
    noticed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (asset_id, kind, ends_on)
);
CREATE INDEX notices_event ON notices (event_id);
