-- A message from someone other than the ticket's contact is kept, flagged
-- (ARCHITECTURE §8): a kind of its own, which neither reopens the ticket nor
-- starts its clock.
ALTER TABLE articles DROP CONSTRAINT articles_kind_check;
ALTER TABLE articles ADD CONSTRAINT articles_kind_check
    CHECK (kind IN ('customer_message', 'third_party_message', 'agent_reply',
                    'internal_note', 'call', 'onsite_arrival'));
