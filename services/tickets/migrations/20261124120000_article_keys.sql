-- An article added with an idempotency key is added once.
ALTER TABLE articles ADD COLUMN idempotency_key text;
CREATE UNIQUE INDEX articles_idempotency_key ON articles (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
