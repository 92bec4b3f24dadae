//! The bulk path of the import: in one transaction, the file's rows are
//! copied (`COPY`) into temporary staging tables, matched with what is
//! stored by set-based joins, checked against it, and merged with
//! `INSERT … SELECT` and `UPDATE … FROM` — never a statement per row.
//!
//! 1. [`prepare`]: one import at a time (an advisory lock), the staging
//!    tables (dropped at the end of the transaction).
//! 2. [`assets_copy`] and [`encode_assets`]: the asset rows, streamed in
//!    while the file is still arriving.
//! 3. [`merge`]: the customers, branches, contacts, projects and models
//!    copied in, each matched with its stored twin by name in one
//!    `CREATE TABLE … AS` join (its id found, or the new one); the faults
//!    against what is stored listed by line; then, when the file has no
//!    fault at all, the writes — the assets classified (new, changed,
//!    unchanged) and the new ones inserted by one statement — and the 5%
//!    cap of every contract whose assets changed price checked again.
//!
//! The caller commits only when [`merge`] answers with what was written.

use std::{collections::HashMap, fmt::Write};

use chrono::NaiveDate;
use sqlx::{Executor, PgConnection, PgPool, Row, postgres::PgCopyIn, postgres::PgRow};
use uuid::Uuid;

use super::{Result, StoreError};
use crate::{
    domain::{self, Amount},
    import::{Base, ContactBranch, Faults, MAX_LISTED_FAULTS, StagedAsset},
};

/// What an import did to one kind of record.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub created: u64,
    pub updated: u64,
    pub unchanged: u64,
}

/// What an import wrote.
#[derive(Debug, Default, Clone, Copy)]
pub struct Written {
    pub customers: Counts,
    pub branches: Counts,
    pub contacts: Counts,
    pub projects: Counts,
    pub models: Counts,
    pub assets: Counts,
}

/// Refreshes the planner's statistics of the tables an import writes, once
/// it is committed. A first import multiplies their rows: until autovacuum
/// (if it runs at all) catches up, plans made for the empty tables scan a
/// million assets to answer one caller.
pub async fn analyze(pool: &PgPool) -> Result<()> {
    sqlx::query("ANALYZE customers, branches, contacts, projects, models, assets")
        .execute(pool)
        .await?;
    Ok(())
}

/// Starts an import in `tx`: refused while another runs (two imports of
/// overlapping files would wait on each other's rows, then fail), then the
/// staging tables.
pub async fn prepare(tx: &mut PgConnection) -> Result<()> {
    let alone: bool =
        sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(hashtext('contracts.import'))")
            .fetch_one(&mut *tx)
            .await?;
    if !alone {
        return Err(StoreError::Refused(
            "another import of the installed base is running: import this file when it has finished".into(),
        ));
    }
    // The joins below match up to millions of rows: let them hash in memory
    // (one import at a time, and only for this transaction).
    tx.execute(
        "SET LOCAL work_mem = '256MB';
         CREATE TEMP TABLE raw_customers (
             ix integer NOT NULL, line bigint NOT NULL, name text NOT NULL, new_id uuid NOT NULL
         ) ON COMMIT DROP;
         CREATE TEMP TABLE raw_models (
             ix integer NOT NULL, line bigint NOT NULL, name text NOT NULL, family text,
             new_id uuid NOT NULL
         ) ON COMMIT DROP;
         CREATE TEMP TABLE raw_branches (
             ix integer NOT NULL, line bigint NOT NULL, customer integer NOT NULL,
             name text NOT NULL, notice_email text NOT NULL, time_zone text NOT NULL,
             region text NOT NULL, new_id uuid NOT NULL
         ) ON COMMIT DROP;
         CREATE TEMP TABLE raw_contacts (
             ix integer NOT NULL, line bigint NOT NULL, customer integer NOT NULL,
             branch integer, name text NOT NULL, email text, phone text, new_id uuid NOT NULL
         ) ON COMMIT DROP;
         CREATE TEMP TABLE raw_projects (
             ix integer NOT NULL, line bigint NOT NULL, customer integer NOT NULL,
             branch integer NOT NULL, name text NOT NULL, accepted_on date NOT NULL,
             lat double precision, lng double precision, new_id uuid NOT NULL
         ) ON COMMIT DROP;
         CREATE TEMP TABLE staged_assets (
             line bigint NOT NULL, id uuid NOT NULL, serial text NOT NULL,
             project integer NOT NULL, model integer NOT NULL, price numeric(14, 2) NOT NULL,
             currency text NOT NULL, firmware text NOT NULL
         ) ON COMMIT DROP;
         -- Stored assets the file changes, with their row's line.
         CREATE TEMP TABLE asset_changes (
             line bigint NOT NULL, id uuid NOT NULL, serial text NOT NULL,
             stored_project uuid NOT NULL, project_id uuid NOT NULL, model_id uuid NOT NULL,
             price numeric(14, 2) NOT NULL, currency text NOT NULL, firmware text NOT NULL,
             repriced boolean NOT NULL
         ) ON COMMIT DROP;",
    )
    .await?;
    Ok(())
}

/// The `COPY` the asset rows stream into, in [`encode_assets`]'s format;
/// `finish` it when the file has ended.
pub async fn assets_copy(tx: &mut PgConnection) -> Result<PgCopyIn<&mut PgConnection>> {
    Ok(tx
        .copy_in_raw(
            "COPY staged_assets (line, id, serial, project, model, price, currency, firmware)
             FROM STDIN",
        )
        .await?)
}

/// Appends `assets` to `out` in `COPY`'s text format, each with the id it
/// gets if it is new (UUIDv7, like every id here).
pub fn encode_assets(assets: &[StagedAsset], out: &mut Vec<u8>) {
    let mut row = Vec::with_capacity(8);
    for asset in assets {
        row.clear();
        row.extend([
            Cell::Number(asset.line),
            Cell::Id(Uuid::now_v7()),
            Cell::Text(&asset.serial),
            Cell::Number(asset.project as u64),
            Cell::Number(asset.model as u64),
            Cell::Amount(asset.price),
            Cell::Text(&asset.currency),
            Cell::Text(&asset.firmware),
        ]);
        encode_row(&row, out);
    }
}

/// A value in a `COPY` text row.
enum Cell<'a> {
    Number(u64),
    Id(Uuid),
    Text(&'a str),
    Amount(Amount),
    Float(f64),
    Date(NaiveDate),
    Null,
}

fn encode_row(cells: &[Cell<'_>], out: &mut Vec<u8>) {
    let mut text = String::new();
    for (i, cell) in cells.iter().enumerate() {
        if i > 0 {
            text.push('\t');
        }
        // Writing to a String cannot fail.
        let _ = match cell {
            Cell::Number(n) => write!(text, "{n}"),
            Cell::Id(id) => write!(text, "{id}"),
            Cell::Amount(amount) => write!(text, "{amount}"),
            // Rust writes the shortest text that reads back as the same
            // double, as PostgreSQL does: a re-import compares equal.
            Cell::Float(f) => write!(text, "{f}"),
            Cell::Date(d) => write!(text, "{d}"),
            Cell::Null => write!(text, "\\N"),
            Cell::Text(t) => {
                for c in t.chars() {
                    match c {
                        '\\' => text.push_str("\\\\"),
                        '\t' => text.push_str("\\t"),
                        '\n' => text.push_str("\\n"),
                        '\r' => text.push_str("\\r"),
                        c => text.push(c),
                    }
                }
                Ok(())
            }
        };
    }
    text.push('\n');
    out.extend_from_slice(text.as_bytes());
}

fn text_or_null(value: &Option<String>) -> Cell<'_> {
    value.as_deref().map_or(Cell::Null, Cell::Text)
}

/// `rows` in `COPY`'s text format, each encoded by `encode` with its index.
fn encoded<T>(rows: &[T], encode: impl Fn(usize, &T) -> Vec<Cell<'_>>) -> Vec<u8> {
    let mut out = Vec::new();
    for (ix, row) in rows.iter().enumerate() {
        encode_row(&encode(ix, row), &mut out);
    }
    out
}

/// Copies `data` (from [`encoded`]) into `table` (`columns`).
async fn copy(tx: &mut PgConnection, table: &str, data: Vec<u8>) -> Result<()> {
    let mut copy = tx.copy_in_raw(&format!("COPY {table} FROM STDIN")).await?;
    copy.send(data).await?;
    copy.finish().await?;
    Ok(())
}

/// Copies the file's customers, branches, contacts, projects and models
/// in (each with a new id, used when it is new), then matches each with
/// its stored twin by name: `staged_*` hold the id to use, whether it was
/// `found`, whether the file `changed` its values, and the parents' ids.
async fn stage(tx: &mut PgConnection, base: &Base) -> Result<()> {
    let id = || Cell::Id(Uuid::now_v7());
    let customers = encoded(&base.customers, |ix, c| {
        vec![
            Cell::Number(ix as u64),
            Cell::Number(c.line),
            Cell::Text(&c.name),
            id(),
        ]
    });
    copy(tx, "raw_customers", customers).await?;
    let models = encoded(&base.models, |ix, m| {
        vec![
            Cell::Number(ix as u64),
            Cell::Number(m.line),
            Cell::Text(&m.name),
            text_or_null(&m.family),
            id(),
        ]
    });
    copy(tx, "raw_models", models).await?;
    let branches = encoded(&base.branches, |ix, b| {
        vec![
            Cell::Number(ix as u64),
            Cell::Number(b.line),
            Cell::Number(b.customer as u64),
            Cell::Text(&b.name),
            Cell::Text(&b.notice_email),
            Cell::Text(&b.time_zone),
            Cell::Text(&b.region),
            id(),
        ]
    });
    copy(tx, "raw_branches", branches).await?;
    let contacts = encoded(&base.contacts, |ix, k| {
        vec![
            Cell::Number(ix as u64),
            Cell::Number(k.line),
            Cell::Number(k.customer as u64),
            match k.branch {
                ContactBranch::One(b) => Cell::Number(b as u64),
                ContactBranch::Several => Cell::Null,
            },
            Cell::Text(&k.name),
            text_or_null(&k.email),
            text_or_null(&k.phone),
            id(),
        ]
    });
    copy(tx, "raw_contacts", contacts).await?;
    let projects = encoded(&base.projects, |ix, p| {
        let (lat, lng) = match p.location {
            Some((lat, lng)) => (Cell::Float(lat), Cell::Float(lng)),
            None => (Cell::Null, Cell::Null),
        };
        vec![
            Cell::Number(ix as u64),
            Cell::Number(p.line),
            Cell::Number(p.customer as u64),
            Cell::Number(p.branch as u64),
            Cell::Text(&p.name),
            Cell::Date(p.accepted_on),
            lat,
            lng,
            id(),
        ]
    });
    copy(tx, "raw_projects", projects).await?;
    // Temporary tables are never analysed on their own: without counts the
    // planner would guess, and loop where it should hash.
    tx.execute(
        "ANALYZE raw_customers, raw_models, raw_branches, raw_contacts, raw_projects,
                 staged_assets;
         CREATE TEMP TABLE staged_customers ON COMMIT DROP AS
         SELECT r.ix, r.line, r.name, COALESCE(c.id, r.new_id) AS id, c.id IS NOT NULL AS found
           FROM raw_customers r LEFT JOIN customers c ON lower(c.name) = lower(r.name);
         CREATE TEMP TABLE staged_models ON COMMIT DROP AS
         SELECT r.ix, r.line, r.name, r.family, COALESCE(m.id, r.new_id) AS id,
                m.id IS NOT NULL AS found, m.family AS stored_family
           FROM raw_models r LEFT JOIN models m ON lower(m.name) = lower(r.name);
         ANALYZE staged_customers, staged_models;
         CREATE TEMP TABLE staged_branches ON COMMIT DROP AS
         SELECT r.ix, r.line, r.name, r.notice_email, r.time_zone, r.region,
                c.id AS customer_id, COALESCE(b.id, r.new_id) AS id, b.id IS NOT NULL AS found,
                b.id IS NOT NULL AND (b.notice_email, b.time_zone, b.region)
                    IS DISTINCT FROM (r.notice_email, r.time_zone, r.region) AS changed
           FROM raw_branches r
           JOIN staged_customers c ON c.ix = r.customer
           LEFT JOIN branches b ON b.customer_id = c.id AND lower(b.name) = lower(r.name);
         ANALYZE staged_branches;
         CREATE TEMP TABLE staged_projects ON COMMIT DROP AS
         SELECT r.ix, r.line, r.name, r.accepted_on, r.lat, r.lng,
                c.id AS customer_id, c.name AS customer, b.id AS branch_id, b.name AS branch,
                b.time_zone, COALESCE(p.id, r.new_id) AS id, p.id IS NOT NULL AS found,
                p.branch_id AS stored_branch,
                p.id IS NOT NULL AND (p.accepted_on, p.lat, p.lng)
                    IS DISTINCT FROM (r.accepted_on, r.lat, r.lng) AS changed
           FROM raw_projects r
           JOIN staged_customers c ON c.ix = r.customer
           JOIN staged_branches b ON b.ix = r.branch
           LEFT JOIN projects p ON p.customer_id = c.id AND lower(p.name) = lower(r.name);
         -- A customer may hold two contacts of one name: refused below,
         -- one row each here all the same.
         CREATE TEMP TABLE staged_contacts ON COMMIT DROP AS
         SELECT DISTINCT ON (r.ix) r.ix, r.line, r.name, r.email, r.phone,
                c.id AS customer_id, b.id AS branch_id, COALESCE(k.id, r.new_id) AS id,
                k.id IS NOT NULL AS found,
                k.id IS NOT NULL AND (k.email, k.phone, k.branch_id)
                    IS DISTINCT FROM (r.email, r.phone, b.id) AS changed
           FROM raw_contacts r
           JOIN staged_customers c ON c.ix = r.customer
           LEFT JOIN staged_branches b ON b.ix = r.branch
           LEFT JOIN contacts k ON k.customer_id = c.id AND lower(k.name) = lower(r.name)
          ORDER BY r.ix, k.id;
         ANALYZE staged_projects, staged_contacts;",
    )
    .await?;
    Ok(())
}

/// Runs `query`, which selects the `line` of each fault, the columns its
/// reason is worded from, and `count(*) OVER () AS total`: the first
/// [`MAX_LISTED_FAULTS`] rows by line.
async fn fault_rows(tx: &mut PgConnection, query: &str) -> Result<Vec<PgRow>> {
    Ok(
        sqlx::query(&format!("{query} ORDER BY line LIMIT {MAX_LISTED_FAULTS}"))
            .fetch_all(&mut *tx)
            .await?,
    )
}

/// Adds the faults of `rows` (from [`fault_rows`]), worded by `reason`.
fn add_faults(
    rows: &[PgRow],
    faults: &mut Faults,
    reason: impl Fn(&PgRow) -> std::result::Result<String, sqlx::Error>,
) -> Result<()> {
    if let Some(first) = rows.first() {
        let total: i64 = first.try_get("total")?;
        faults.count_more((total as u64).saturating_sub(rows.len() as u64));
    }
    for row in rows {
        let line: i64 = row.try_get("line")?;
        faults.add(line as u64, reason(row)?);
    }
    Ok(())
}

/// Merges the staged file into the stored base, or lists in `faults` why
/// it cannot be: `None` then, and the caller rolls back. `faults` may hold
/// the file's own faults already: the stored base is still compared, so
/// one answer lists both.
pub async fn merge(
    tx: &mut PgConnection,
    base: &Base,
    faults: &mut Faults,
) -> Result<Option<Written>> {
    stage(tx, base).await?;
    refused_by_stored(tx, faults).await?;
    if !faults.is_empty() {
        // Nothing will be written: only find the serials stored elsewhere.
        tx.execute(
            "INSERT INTO asset_changes
             SELECT s.line, a.id, s.serial, a.project_id, p.id, m.id, s.price, s.currency,
                    s.firmware, false
               FROM staged_assets s
               JOIN assets a ON upper(a.serial) = upper(s.serial)
               JOIN staged_projects p ON p.ix = s.project
               JOIN staged_models m ON m.ix = s.model
              WHERE a.project_id <> p.id",
        )
        .await?;
        moved_serials(tx, faults).await?;
        return Ok(None);
    }
    let mut written = write_entities(tx).await?;
    written.assets = merge_assets(tx).await?;
    moved_serials(tx, faults).await?;
    if !faults.is_empty() {
        return Ok(None);
    }
    tx.execute(
        "UPDATE assets a
            SET model_id = ch.model_id, price = ch.price, currency = ch.currency,
                firmware = ch.firmware
           FROM asset_changes ch WHERE a.id = ch.id",
    )
    .await?;
    check_caps(tx, faults).await?;
    Ok(faults.is_empty().then_some(written))
}

/// Lists what the stored base refuses of the staged customers, branches,
/// contacts, projects and models.
async fn refused_by_stored(tx: &mut PgConnection, faults: &mut Faults) -> Result<()> {
    let rows = fault_rows(
        tx,
        "SELECT line, name, family, stored_family, count(*) OVER () AS total
           FROM staged_models
          WHERE (found AND family <> stored_family) OR (NOT found AND family IS NULL)",
    )
    .await?;
    add_faults(&rows, faults, |row| {
        let name: String = row.try_get("name")?;
        Ok(match row.try_get::<Option<String>, _>("stored_family")? {
            Some(stored) => format!(
                "model {name:?} is a {stored} in the catalogue, not a {}: correct the family, or leave it empty",
                row.try_get::<String, _>("family")?
            ),
            None => format!(
                "model {name:?} is not in the catalogue: give its family (camera, nvr, ptz, ...) to add it"
            ),
        })
    })?;
    let rows = fault_rows(
        tx,
        "SELECT s.line, s.name, s.customer, stored.name AS stored_branch, s.branch,
                count(*) OVER () AS total
           FROM staged_projects s JOIN branches stored ON stored.id = s.stored_branch
          WHERE s.found AND s.stored_branch <> s.branch_id",
    )
    .await?;
    add_faults(&rows, faults, |row| {
        Ok(format!(
            "project {:?} of {:?} is at branch {:?}, not {:?}: a project stays at its branch",
            row.try_get::<String, _>("name")?,
            row.try_get::<String, _>("customer")?,
            row.try_get::<String, _>("stored_branch")?,
            row.try_get::<String, _>("branch")?,
        ))
    })?;
    let rows = fault_rows(
        tx,
        "SELECT r.line, r.name, c.name AS customer, count(*) OVER () AS total
           FROM raw_contacts r
           JOIN staged_customers c ON c.ix = r.customer AND c.found
           JOIN contacts k ON k.customer_id = c.id AND lower(k.name) = lower(r.name)
          GROUP BY r.ix, r.line, r.name, c.name HAVING count(*) > 1",
    )
    .await?;
    add_faults(&rows, faults, |row| {
        Ok(format!(
            "{:?} has several contacts named {:?}: the import cannot tell which one this is; rename one of them",
            row.try_get::<String, _>("customer")?,
            row.try_get::<String, _>("name")?,
        ))
    })?;
    for key in ["email", "phone"] {
        let rows = fault_rows(
            tx,
            &format!(
                "SELECT s.line, s.{key} AS value, k.name AS holder, owner.name AS owner,
                        count(*) OVER () AS total
                   FROM staged_contacts s
                   JOIN contacts k ON k.{key} = s.{key} AND k.id <> s.id
                   JOIN customers owner ON owner.id = k.customer_id"
            ),
        )
        .await?;
        add_faults(&rows, faults, |row| {
            Ok(format!(
                "contact_{key} {:?} is already {:?}'s, a contact of {:?}: it belongs to one contact",
                row.try_get::<String, _>("value")?,
                row.try_get::<String, _>("holder")?,
                row.try_get::<String, _>("owner")?,
            ))
        })?;
    }
    Ok(())
}

/// Lists the serials of `asset_changes` stored in another project.
async fn moved_serials(tx: &mut PgConnection, faults: &mut Faults) -> Result<()> {
    let rows = fault_rows(
        tx,
        "SELECT ch.line, ch.serial, c.name AS customer, p.name AS project,
                count(*) OVER () AS total
           FROM asset_changes ch
           JOIN projects p ON p.id = ch.stored_project
           JOIN customers c ON c.id = p.customer_id
          WHERE ch.stored_project <> ch.project_id",
    )
    .await?;
    add_faults(&rows, faults, |row| {
        Ok(format!(
            "serial {:?} is already recorded in project {:?} of {:?}: a serial is one device; correct the serial, or the row's customer and project",
            row.try_get::<String, _>("serial")?,
            row.try_get::<String, _>("project")?,
            row.try_get::<String, _>("customer")?,
        ))
    })
}

/// `(created, updated, unchanged)` of one kind: `found` and `changed`
/// counted in `table`.
async fn counted(tx: &mut PgConnection, table: &str, changes: bool) -> Result<Counts> {
    let changed = if changes { "changed" } else { "false" };
    let (created, updated, unchanged): (i64, i64, i64) = sqlx::query_as(&format!(
        "SELECT count(*) FILTER (WHERE NOT found), count(*) FILTER (WHERE found AND {changed}),
                count(*) FILTER (WHERE found AND NOT {changed})
           FROM {table}"
    ))
    .fetch_one(&mut *tx)
    .await?;
    Ok(Counts {
        created: created as u64,
        updated: updated as u64,
        unchanged: unchanged as u64,
    })
}

/// The customers, models, branches, projects and contacts written, parents
/// first; the file has no fault.
async fn write_entities(tx: &mut PgConnection) -> Result<Written> {
    let written = Written {
        customers: counted(tx, "staged_customers", false).await?,
        models: counted(tx, "staged_models", false).await?,
        branches: counted(tx, "staged_branches", true).await?,
        contacts: counted(tx, "staged_contacts", true).await?,
        projects: counted(tx, "staged_projects", true).await?,
        assets: Counts::default(),
    };
    tx.execute(
        "INSERT INTO customers (id, name) SELECT id, name FROM staged_customers WHERE NOT found;
         INSERT INTO models (id, name, family)
              SELECT id, name, family FROM staged_models WHERE NOT found;
         UPDATE branches b
            SET notice_email = s.notice_email, time_zone = s.time_zone, region = s.region
           FROM staged_branches s WHERE s.changed AND b.id = s.id;
         INSERT INTO branches (id, customer_id, name, time_zone, region, notice_email)
              SELECT id, customer_id, name, time_zone, region, notice_email
                FROM staged_branches WHERE NOT found;
         UPDATE projects p SET accepted_on = s.accepted_on, lat = s.lat, lng = s.lng
           FROM staged_projects s WHERE s.changed AND p.id = s.id;
         INSERT INTO projects (id, customer_id, branch_id, name, lat, lng, time_zone,
                               accepted_on, warranty_months)
              SELECT id, customer_id, branch_id, name, lat, lng, time_zone, accepted_on, 12
                FROM staged_projects WHERE NOT found;
         UPDATE contacts k SET email = s.email, phone = s.phone, branch_id = s.branch_id
           FROM staged_contacts s WHERE s.changed AND k.id = s.id;
         INSERT INTO contacts (id, customer_id, branch_id, name, email, phone)
              SELECT id, customer_id, branch_id, name, email, phone
                FROM staged_contacts WHERE NOT found;",
    )
    .await
    .map_err(changed_meanwhile)?;
    Ok(written)
}

/// One pass over the staged assets: each matched with the stored asset of
/// its serial; the new ones inserted, those the file changes kept in
/// `asset_changes`. A stored asset is neither locked nor rewritten here, so
/// a re-import writes nothing.
async fn merge_assets(tx: &mut PgConnection) -> Result<Counts> {
    let (rows, new, created, changed): (i64, i64, i64, i64) = sqlx::query_as(
        "WITH matched AS (
             SELECT s.line, s.id AS new_id, s.serial, p.id AS project_id, m.id AS model_id,
                    s.price, s.currency, s.firmware, a.id AS stored_id,
                    a.project_id AS stored_project,
                    (a.price, a.currency) IS DISTINCT FROM (s.price, s.currency) AS repriced,
                    (a.project_id, a.model_id, a.price, a.currency, a.firmware)
                        IS DISTINCT FROM (p.id, m.id, s.price, s.currency, s.firmware) AS changed
               FROM staged_assets s
               JOIN staged_projects p ON p.ix = s.project
               JOIN staged_models m ON m.ix = s.model
               LEFT JOIN assets a ON upper(a.serial) = upper(s.serial)
         ), fresh AS (
             INSERT INTO assets (id, project_id, model_id, serial, price, currency, firmware)
             SELECT new_id, project_id, model_id, serial, price, currency, firmware
               FROM matched WHERE stored_id IS NULL
             ON CONFLICT ((upper(serial))) DO NOTHING
             RETURNING 1
         ), kept AS (
             INSERT INTO asset_changes
             SELECT line, stored_id, serial, stored_project, project_id, model_id, price,
                    currency, firmware, repriced
               FROM matched WHERE stored_id IS NOT NULL AND changed
             RETURNING 1
         )
         SELECT (SELECT count(*) FROM matched), (SELECT count(*) FROM matched WHERE stored_id IS NULL),
                (SELECT count(*) FROM fresh), (SELECT count(*) FROM kept)",
    )
    .fetch_one(&mut *tx)
    .await
    .map_err(changed_meanwhile)?;
    if created != new {
        // A serial added by someone else since the join read the assets.
        return Err(StoreError::Refused(format!(
            "{CHANGED_MEANWHILE} (serials)"
        )));
    }
    let (rows, new, changed) = (rows as u64, new as u64, changed as u64);
    Ok(Counts {
        created: new,
        updated: changed,
        unchanged: rows - new - changed,
    })
}

const CHANGED_MEANWHILE: &str = "a name, email, phone or serial of the file was recorded by someone else while it was imported: nothing was written; import the file again";

/// A write that collided with a change made while the file was imported
/// (a unique key taken meanwhile): the file is fine, the moment was not.
fn changed_meanwhile(error: sqlx::Error) -> StoreError {
    let taken = error
        .as_database_error()
        .filter(|e| e.code().as_deref() == Some("23505"))
        .map(|e| e.constraint().unwrap_or_default().to_owned());
    match taken {
        Some(key) => StoreError::Refused(format!("{CHANGED_MEANWHILE} ({key})")),
        None => StoreError::Database(error),
    }
}

/// P6 again for every contract covering an asset whose price or currency
/// the file changed: over the new prices the fee must still be within 5%
/// a year, in one currency. A contract it breaks refuses the rows that
/// changed its assets.
async fn check_caps(tx: &mut PgConnection, faults: &mut Faults) -> Result<()> {
    let contracts: Vec<(Uuid, NaiveDate, NaiveDate, i64, String)> = sqlx::query_as(
        "SELECT k.id, k.starts_on, k.ends_on, (k.fee * 100)::bigint, k.currency
           FROM contracts k
          WHERE k.id IN (SELECT ca.contract_id FROM contract_assets ca
                           JOIN asset_changes ch ON ch.id = ca.asset_id WHERE ch.repriced)
          ORDER BY k.id FOR UPDATE OF k",
    )
    .fetch_all(&mut *tx)
    .await?;
    if contracts.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = contracts.iter().map(|c| c.0).collect();
    let prices: Vec<(Uuid, i64, String)> = sqlx::query_as(
        "SELECT ca.contract_id, (a.price * 100)::bigint, a.currency
           FROM contract_assets ca JOIN assets a ON a.id = ca.asset_id
          WHERE ca.contract_id = ANY($1)",
    )
    .bind(&ids)
    .fetch_all(&mut *tx)
    .await?;
    let changed: Vec<(Uuid, i64, String)> = sqlx::query_as(
        "SELECT ca.contract_id, ch.line, ch.serial
           FROM contract_assets ca JOIN asset_changes ch ON ch.id = ca.asset_id
          WHERE ch.repriced AND ca.contract_id = ANY($1)",
    )
    .bind(&ids)
    .fetch_all(&mut *tx)
    .await?;
    let mut covered: HashMap<Uuid, Vec<(Amount, &str)>> = HashMap::new();
    for (contract, cents, currency) in &prices {
        covered
            .entry(*contract)
            .or_default()
            .push((Amount(*cents), currency.as_str()));
    }
    for (id, start, end, fee, currency) in &contracts {
        let months = domain::term_months(*start, *end).map_err(StoreError::Refused)?;
        let prices = covered.get(id).map(Vec::as_slice).unwrap_or_default();
        let verdict = domain::covered_price(currency, prices)
            .and_then(|price| domain::check_cap(Amount(*fee), currency, months, price));
        if let Err(why) = verdict {
            for (_, line, serial) in changed.iter().filter(|c| c.0 == *id) {
                faults.add(
                    *line as u64,
                    format!(
                        "the new price of {serial:?} breaks contract {id} ({start} to {end}): {why}; change the contract's coverage first, or keep the price"
                    ),
                );
            }
        }
    }
    Ok(())
}
