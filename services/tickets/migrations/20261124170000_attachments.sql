-- The HTML version of an article that came as HTML (mail), sanitised
-- before it is kept.
ALTER TABLE articles ADD COLUMN html text;

-- Files kept with an article, in the order they came.
CREATE TABLE attachments (
    id           uuid   PRIMARY KEY,
    article_id   uuid   NOT NULL REFERENCES articles (id),
    position     bigint NOT NULL,
    name         text   NOT NULL,
    content_type text   NOT NULL,
    size         bigint NOT NULL,
    content      bytea  NOT NULL,
    UNIQUE (article_id, position)
);
