-- The pager's people become the directory's (issue 13). What the pager had
-- before is kept as `legacy_people`: schedules naming them keep paging them
-- until they are in the directory (`hotline people adopt-pager`), and
-- `adopted_by` is the directory person who took their email.
ALTER TABLE people RENAME TO legacy_people;
ALTER INDEX people_pkey RENAME TO legacy_people_pkey;
ALTER TABLE legacy_people ADD COLUMN adopted_by uuid;

-- A copy of each person of the directory, from `person.*` events (the
-- newest `updated_at` wins: the events of one person may arrive out of
-- order), and the pager's own setting for them: where their webhook pages
-- go. Emails are unique in the directory; not here, where two people
-- swapping emails may briefly hold one.
CREATE TABLE people (
    id          uuid PRIMARY KEY,
    name        text NOT NULL,
    email       text NOT NULL,
    phone       text NOT NULL DEFAULT '',
    active      boolean NOT NULL,
    updated_at  timestamptz NOT NULL,
    webhook_url text NOT NULL DEFAULT ''
);
CREATE INDEX people_email ON people (email);
