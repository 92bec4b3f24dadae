-- Event types the dead-letter tests' consumer has been fixed for: until its
-- type is here, a `test.curable` event fails.
CREATE TABLE cures (
    event_type text PRIMARY KEY
);
