-- The installed base (ARCHITECTURE §12). Names are unique case-blind
-- (`Acme` and `ACME` are one customer); emails are stored lower-case and
-- phones in E.164, so the entitlement lookups are plain index probes.

-- Exclusion constraints over (uuid, daterange) need btree_gist; it lives in
-- `public` because an extension is installed once per database, and
-- `scheduling` will need it too. Operator classes are found without the
-- search_path.
CREATE EXTENSION IF NOT EXISTS btree_gist WITH SCHEMA public;

CREATE TABLE customers (
    id         uuid PRIMARY KEY,
    name       text NOT NULL,
    email      text,
    phone      text,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX customers_name_key ON customers (lower(name));
CREATE INDEX customers_email ON customers (email) WHERE email IS NOT NULL;
CREATE INDEX customers_phone ON customers (phone) WHERE phone IS NOT NULL;

CREATE TABLE branches (
    id           uuid PRIMARY KEY,
    customer_id  uuid NOT NULL REFERENCES customers (id),
    name         text NOT NULL,
    address      text NOT NULL DEFAULT '',
    time_zone    text NOT NULL,
    region       text NOT NULL DEFAULT '',
    notice_email text NOT NULL,
    -- Lets contacts and projects reference (branch, customer) together, so
    -- a branch of another customer cannot be named.
    UNIQUE (id, customer_id)
);
CREATE UNIQUE INDEX branches_name_key ON branches (customer_id, lower(name));
CREATE INDEX branches_notice_email ON branches (notice_email);

CREATE TABLE contacts (
    id          uuid PRIMARY KEY,
    customer_id uuid NOT NULL REFERENCES customers (id),
    branch_id   uuid,
    name        text NOT NULL,
    email       text CONSTRAINT contacts_email_key UNIQUE,
    phone       text CONSTRAINT contacts_phone_key UNIQUE,
    FOREIGN KEY (branch_id, customer_id) REFERENCES branches (id, customer_id),
    CHECK (email IS NOT NULL OR phone IS NOT NULL)
);
CREATE INDEX contacts_customer ON contacts (customer_id);

-- The catalogue of models; the family later decides technicians' skills.
CREATE TABLE models (
    id     uuid PRIMARY KEY,
    name   text NOT NULL,
    family text NOT NULL CHECK (family = lower(family) AND family <> '')
);
CREATE UNIQUE INDEX models_name_key ON models (lower(name));

CREATE TABLE projects (
    id              uuid PRIMARY KEY,
    customer_id     uuid NOT NULL REFERENCES customers (id),
    branch_id       uuid NOT NULL,
    name            text NOT NULL,
    lat             double precision CHECK (lat BETWEEN -90 AND 90),
    lng             double precision CHECK (lng BETWEEN -180 AND 180),
    time_zone       text NOT NULL,
    -- The warranty is derived from these two at read time, never stored.
    accepted_on     date NOT NULL,
    warranty_months integer NOT NULL CHECK (warranty_months BETWEEN 1 AND 120),
    FOREIGN KEY (branch_id, customer_id) REFERENCES branches (id, customer_id),
    CHECK ((lat IS NULL) = (lng IS NULL))
);
CREATE UNIQUE INDEX projects_name_key ON projects (customer_id, lower(name));
CREATE INDEX projects_name ON projects (lower(name));
CREATE INDEX projects_branch ON projects (branch_id);

CREATE TABLE assets (
    id         uuid PRIMARY KEY,
    project_id uuid NOT NULL REFERENCES projects (id),
    model_id   uuid NOT NULL REFERENCES models (id),
    serial     text NOT NULL,
    price      numeric(14, 2) NOT NULL CHECK (price >= 0),
    currency   text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    firmware   text NOT NULL DEFAULT ''
);
-- Serials are unique across all customers, whatever their letter case.
CREATE UNIQUE INDEX assets_serial_key ON assets (upper(serial));
CREATE INDEX assets_project ON assets (project_id);

CREATE TABLE contracts (
    id          uuid PRIMARY KEY,
    customer_id uuid NOT NULL REFERENCES customers (id),
    starts_on   date NOT NULL,
    ends_on     date NOT NULL CHECK (ends_on >= starts_on),
    fee         numeric(14, 2) NOT NULL CHECK (fee >= 0),
    currency    text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX contracts_customer ON contracts (customer_id);
CREATE INDEX contracts_ends_on ON contracts (ends_on);

-- What a contract covers, asset by asset, with the contract's term copied
-- in so PostgreSQL itself refuses two contracts on one asset for
-- overlapping days: two concurrent creates cannot both win.
CREATE TABLE contract_assets (
    contract_id uuid NOT NULL REFERENCES contracts (id),
    asset_id    uuid NOT NULL REFERENCES assets (id),
    during      daterange NOT NULL,
    PRIMARY KEY (contract_id, asset_id),
    CONSTRAINT contract_assets_overlap EXCLUDE USING gist (asset_id WITH =, during WITH &&)
);
-- Entitlement reads an asset's contracts by asset: a plain B-tree probe.
CREATE INDEX contract_assets_asset ON contract_assets (asset_id);
