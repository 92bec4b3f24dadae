-- The directory of people and their stated presence (ARCHITECTURE §13).
-- Liveness (the heartbeat) is in Redis only: losing it makes people
-- offline, never loses who they are or what they said they are.

CREATE TABLE people (
    id               uuid PRIMARY KEY,
    name             text NOT NULL,
    -- Lower-case and trimmed by the api: unique as typed is unique case-blind.
    email            text NOT NULL,
    -- E.164.
    phone            text,
    roles            text[] NOT NULL CHECK (
        cardinality(roles) > 0
        AND roles <@ ARRAY['agent', 'technician', 'dispatcher', 'manager', 'admin']
    ),
    team             text,
    -- Lower-case keys, sorted.
    regions          text[] NOT NULL DEFAULT '{}',
    capacity         integer NOT NULL DEFAULT 10 CHECK (capacity BETWEEN 0 AND 1000),
    home_lat         double precision CHECK (home_lat BETWEEN -90 AND 90),
    home_lng         double precision CHECK (home_lng BETWEEN -180 AND 180),
    time_zone        text,
    active           boolean NOT NULL DEFAULT true,
    -- What the person said; the heartbeat in Redis decides whether it holds.
    presence         text NOT NULL DEFAULT 'offline'
                     CHECK (presence IN ('online', 'away', 'offline')),
    presence_at      timestamptz NOT NULL DEFAULT now(),
    -- For routing's ties: the longest since an assignment goes first.
    last_assigned_at timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CHECK ((home_lat IS NULL) = (home_lng IS NULL)),
    -- A deactivated person states no presence.
    CHECK (active OR presence = 'offline')
);
CREATE UNIQUE INDEX people_email_key ON people (lower(email));
CREATE INDEX people_name ON people (lower(name), id);
-- Routing reads the people who said they are online (few of the directory).
CREATE INDEX people_stated_online ON people (id) WHERE active AND presence = 'online';
CREATE INDEX people_roles ON people USING gin (roles);

CREATE TABLE person_skills (
    person_id uuid NOT NULL REFERENCES people (id),
    skill     text NOT NULL,
    level     smallint NOT NULL CHECK (level BETWEEN 1 AND 5),
    PRIMARY KEY (person_id, skill)
);
-- "Who has nvr at level 2 or more": routing's question.
CREATE INDEX person_skills_skill ON person_skills (skill, level);
