-- Room on each page for a ticket's next versions: every new ticket is
-- updated once more within a second (its entitlement), and later by
-- responses and assignments. With room on the page, a change to columns no
-- index reads (coverage, version, updated_at) is a heap-only update: no
-- new entry in any of the table's eight indexes. Applies to pages written
-- from now on.
ALTER TABLE tickets SET (fillfactor = 85);
