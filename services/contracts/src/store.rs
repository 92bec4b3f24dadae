//! The only SQL of `contracts`: the directory, projects, assets, models,
//! contracts and what they cover, and the lookups behind entitlement.
//! Amounts cross this boundary as cents (`Amount`): PostgreSQL keeps
//! `NUMERIC(14,2)` and converts exactly (`price * 100`, `cents / 100`).

use chrono::NaiveDate;
use hotline_kit::bus::outbox;
use hotline_kit::db;
use hotline_proto::events::v1::EventEnvelope;
use sqlx::{FromRow, PgConnection, PgPool, Row, postgres::PgDatabaseError};
use uuid::Uuid;

use crate::{
    domain::{self, Amount, Term},
    events,
};

pub mod import;

/// Why the store did not do what was asked; the api maps each to a status.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A named customer, branch, project, asset or contract does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A name, email, phone or serial is already taken.
    #[error("{0}")]
    Clash(String),
    /// The request contradicts itself or the data (a branch of another
    /// customer, a project name two customers use).
    #[error("{0}")]
    Invalid(String),
    /// A rule of the promise refuses it: the 5% cap, an overlapping contract.
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// The write's events could not be written with it: nothing was.
    #[error(transparent)]
    Outbox(anyhow::Error),
}

/// Writes `events` in the write's transaction (the outbox): they are
/// published if and only if the write commits.
async fn publish(conn: &mut PgConnection, events: &[EventEnvelope]) -> Result<()> {
    outbox::enqueue(conn, events)
        .await
        .map_err(StoreError::Outbox)
}

type Result<T> = std::result::Result<T, StoreError>;

/// `error` as a clash when it broke one of `constraints` (name, message).
fn clash(error: sqlx::Error, constraints: &[(&str, String)]) -> StoreError {
    let broken = error
        .as_database_error()
        .and_then(|e| e.try_downcast_ref::<PgDatabaseError>())
        .and_then(|e| e.constraint().map(str::to_owned));
    match constraints
        .iter()
        .find(|(name, _)| Some(*name) == broken.as_deref())
    {
        Some((_, message)) => StoreError::Clash(message.clone()),
        None => StoreError::Database(error),
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Customer {
    pub id: Uuid,
    /// Unique case-blind: the name people use to name it.
    pub name: String,
    /// Lower-case; not unique (a shared facility address makes lookups ambiguous).
    pub email: Option<String>,
    /// E.164; not unique, like the email.
    pub phone: Option<String>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Branch {
    pub id: Uuid,
    pub customer_id: Uuid,
    pub name: String,
    pub address: String,
    /// An IANA name chrono-tz knows; projects default to it.
    pub time_zone: String,
    pub region: String,
    /// Lower-case; receives notices and reports; may match a caller.
    pub notice_email: String,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Contact {
    pub id: Uuid,
    pub customer_id: Uuid,
    /// `None`: the contact speaks for the whole customer.
    pub branch_id: Option<Uuid>,
    pub name: String,
    pub email: Option<String>,
    pub phone: Option<String>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Project {
    pub id: Uuid,
    pub customer_id: Uuid,
    /// The customer's name, for answers that name it.
    pub customer: String,
    pub branch_id: Uuid,
    pub name: String,
    /// The site, for routing technicians later; lat and lng come together.
    pub lat: Option<f64>,
    pub lng: Option<f64>,
    /// Where "today" is for its assets' coverage.
    pub time_zone: String,
    /// The warranty is derived from this and `warranty_months` at read time.
    pub accepted_on: NaiveDate,
    pub warranty_months: i32,
}

/// An asset with what its coverage is derived from: its project's
/// acceptance, warranty months and time zone, and its contract terms.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Asset {
    pub id: Uuid,
    /// Unique case-blind across all customers; stored as given.
    pub serial: String,
    pub model: String,
    pub family: String,
    pub project_id: Uuid,
    pub project: String,
    pub customer_id: Uuid,
    pub customer: String,
    pub branch_id: Uuid,
    /// Its project's branch's name and region, for answers that name them.
    pub branch: String,
    pub region: String,
    /// The product price in cents, in `currency`: the base of the 5% cap.
    pub price_cents: i64,
    pub currency: String,
    pub firmware: String,
    /// Its project's, with `warranty_months` and `time_zone`: what its warranty and today are derived from.
    pub accepted_on: NaiveDate,
    pub warranty_months: i32,
    pub time_zone: String,
    /// Its project's site.
    pub lat: Option<f64>,
    pub lng: Option<f64>,
    #[sqlx(skip)]
    /// Every contract term covering it, oldest first.
    pub terms: Vec<Term<Uuid>>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Contract {
    pub id: Uuid,
    pub customer_id: Uuid,
    pub customer: String,
    pub starts_on: NaiveDate,
    /// Inclusive; whole calendar months after `starts_on`.
    pub ends_on: NaiveDate,
    /// The fee for the whole term, in cents, in `currency`.
    pub fee_cents: i64,
    pub currency: String,
    /// The covered assets, sorted.
    pub serials: Vec<String>,
    /// The covered assets' total price, in cents.
    pub covered_cents: i64,
}

const CUSTOMER: &str = "SELECT id, name, email, phone FROM customers";
const BRANCH: &str =
    "SELECT id, customer_id, name, address, time_zone, region, notice_email FROM branches";
const CONTACT: &str = "SELECT id, customer_id, branch_id, name, email, phone FROM contacts";
const PROJECT: &str = "SELECT p.id, p.customer_id, c.name AS customer, p.branch_id, p.name,
        p.lat, p.lng, p.time_zone, p.accepted_on, p.warranty_months
    FROM projects p JOIN customers c ON c.id = p.customer_id";
/// Assets with their model, project, branch and customer, and the terms
/// of the contracts covering each (oldest first) as three arrays: one
/// query, however many assets.
const ASSET: &str = "SELECT a.id, a.serial, m.name AS model, m.family, a.project_id,
        p.name AS project, p.customer_id, c.name AS customer, p.branch_id,
        b.name AS branch, b.region,
        (a.price * 100)::bigint AS price_cents, a.currency, a.firmware,
        p.accepted_on, p.warranty_months, p.time_zone, p.lat, p.lng,
        t.term_contracts, t.term_starts, t.term_ends
    FROM assets a
    JOIN models m ON m.id = a.model_id
    JOIN projects p ON p.id = a.project_id
    JOIN branches b ON b.id = p.branch_id
    JOIN customers c ON c.id = p.customer_id
    CROSS JOIN LATERAL (
        SELECT COALESCE(array_agg(k.id ORDER BY k.starts_on), '{}') AS term_contracts,
               COALESCE(array_agg(k.starts_on ORDER BY k.starts_on), '{}') AS term_starts,
               COALESCE(array_agg(k.ends_on ORDER BY k.starts_on), '{}') AS term_ends
        FROM contract_assets ca JOIN contracts k ON k.id = ca.contract_id
        WHERE ca.asset_id = a.id
    ) t";

/// A row of [`ASSET`]: the asset, and its terms still as arrays.
#[derive(sqlx::FromRow)]
struct AssetRow {
    #[sqlx(flatten)]
    asset: Asset,
    term_contracts: Vec<Uuid>,
    term_starts: Vec<NaiveDate>,
    term_ends: Vec<NaiveDate>,
}

impl From<AssetRow> for Asset {
    fn from(row: AssetRow) -> Self {
        let mut asset = row.asset;
        asset.terms = row
            .term_contracts
            .into_iter()
            .zip(row.term_starts)
            .zip(row.term_ends)
            .map(|((contract, start), end)| Term {
                contract,
                start,
                end,
            })
            .collect();
        asset
    }
}

const CONTRACT: &str = "SELECT k.id, k.customer_id, c.name AS customer, k.starts_on, k.ends_on,
        (k.fee * 100)::bigint AS fee_cents, k.currency,
        COALESCE(array_agg(a.serial ORDER BY a.serial) FILTER (WHERE a.id IS NOT NULL), '{}')
            AS serials,
        (COALESCE(sum(a.price), 0) * 100)::bigint AS covered_cents
    FROM contracts k
    JOIN customers c ON c.id = k.customer_id
    LEFT JOIN contract_assets ca ON ca.contract_id = k.id
    LEFT JOIN assets a ON a.id = ca.asset_id";

/// The most assets one answer lists (a customer's whole base can be large).
pub const MAX_ASSETS: i64 = 500;

pub struct NewCustomer {
    pub name: String,
    pub email: Option<String>,
    pub phone: Option<String>,
}

pub async fn create_customer(pool: &PgPool, new: NewCustomer) -> Result<Customer> {
    sqlx::query_as(
        "INSERT INTO customers (id, name, email, phone) VALUES ($1, $2, $3, $4)
         RETURNING id, name, email, phone",
    )
    .bind(Uuid::now_v7())
    .bind(&new.name)
    .bind(&new.email)
    .bind(&new.phone)
    .fetch_one(pool)
    .await
    .map_err(|e| {
        clash(
            e,
            &[(
                "customers_name_key",
                format!("a customer named {:?} already exists", new.name),
            )],
        )
    })
}

pub async fn list_customers(
    pool: &PgPool,
    text: Option<&str>,
    limit: i64,
) -> Result<Vec<Customer>> {
    Ok(sqlx::query_as(&format!(
        "{CUSTOMER} WHERE $1::text IS NULL OR strpos(lower(name), lower($1)) > 0
         ORDER BY lower(name) LIMIT $2"
    ))
    .bind(text)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// A customer named by id or by name (names are unique, case-blind).
pub async fn customer(conn: &mut PgConnection, reference: &str) -> Result<Customer> {
    let found = match Uuid::parse_str(reference) {
        Ok(id) => {
            sqlx::query_as(&format!("{CUSTOMER} WHERE id = $1"))
                .bind(id)
                .fetch_optional(&mut *conn)
                .await?
        }
        Err(_) => {
            sqlx::query_as(&format!("{CUSTOMER} WHERE lower(name) = lower($1)"))
                .bind(reference)
                .fetch_optional(&mut *conn)
                .await?
        }
    };
    found.ok_or_else(|| {
        StoreError::NotFound(format!(
            "no customer {reference:?}: name one by id or by its exact name (hotline customers list)"
        ))
    })
}

/// A branch of `customer` named by id or by name.
pub async fn branch(
    conn: &mut PgConnection,
    customer: &Customer,
    reference: &str,
) -> Result<Branch> {
    let found = match Uuid::parse_str(reference) {
        Ok(id) => {
            sqlx::query_as(&format!("{BRANCH} WHERE id = $1 AND customer_id = $2"))
                .bind(id)
                .bind(customer.id)
                .fetch_optional(&mut *conn)
                .await?
        }
        Err(_) => {
            sqlx::query_as(&format!(
                "{BRANCH} WHERE customer_id = $2 AND lower(name) = lower($1)"
            ))
            .bind(reference)
            .bind(customer.id)
            .fetch_optional(&mut *conn)
            .await?
        }
    };
    found.ok_or_else(|| {
        StoreError::NotFound(format!(
            "customer {} has no branch {reference:?} (hotline customers show {:?})",
            customer.name, customer.name
        ))
    })
}

pub struct NewBranch {
    pub name: String,
    pub address: String,
    pub time_zone: String,
    pub region: String,
    pub notice_email: String,
}

pub async fn add_branch(pool: &PgPool, customer: &str, new: NewBranch) -> Result<Branch> {
    let mut tx = pool.begin().await?;
    let customer = self::customer(&mut tx, customer).await?;
    let branch: Branch = sqlx::query_as(
        "INSERT INTO branches (id, customer_id, name, address, time_zone, region, notice_email)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         RETURNING id, customer_id, name, address, time_zone, region, notice_email",
    )
    .bind(Uuid::now_v7())
    .bind(customer.id)
    .bind(&new.name)
    .bind(&new.address)
    .bind(&new.time_zone)
    .bind(&new.region)
    .bind(&new.notice_email)
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| {
        clash(
            e,
            &[(
                "branches_name_key",
                format!(
                    "customer {} already has a branch named {:?}",
                    customer.name, new.name
                ),
            )],
        )
    })?;
    tx.commit().await?;
    Ok(branch)
}

pub struct NewContact {
    pub branch: Option<String>,
    pub name: String,
    pub email: Option<String>,
    pub phone: Option<String>,
}

pub async fn add_contact(pool: &PgPool, customer: &str, new: NewContact) -> Result<Contact> {
    let mut tx = pool.begin().await?;
    let customer = self::customer(&mut tx, customer).await?;
    let branch = match &new.branch {
        Some(branch) => Some(self::branch(&mut tx, &customer, branch).await?.id),
        None => None,
    };
    let contact = sqlx::query_as(
        "INSERT INTO contacts (id, customer_id, branch_id, name, email, phone)
         VALUES ($1, $2, $3, $4, $5, $6)
         RETURNING id, customer_id, branch_id, name, email, phone",
    )
    .bind(Uuid::now_v7())
    .bind(customer.id)
    .bind(branch)
    .bind(&new.name)
    .bind(&new.email)
    .bind(&new.phone)
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| {
        let taken = |what: &str, value: &Option<String>| {
            format!(
                "{what} {} is already another contact's: a {what} belongs to one contact",
                value.as_deref().unwrap_or_default()
            )
        };
        clash(
            e,
            &[
                ("contacts_email_key", taken("email", &new.email)),
                ("contacts_phone_key", taken("phone", &new.phone)),
            ],
        )
    })?;
    tx.commit().await?;
    Ok(contact)
}

pub struct NewProject {
    pub branch: String,
    pub name: String,
    pub location: Option<(f64, f64)>,
    /// `None`: the branch's.
    pub time_zone: Option<String>,
    pub accepted_on: NaiveDate,
    pub warranty_months: i32,
}

pub async fn add_project(pool: &PgPool, customer: &str, new: NewProject) -> Result<Project> {
    let mut tx = pool.begin().await?;
    let customer = self::customer(&mut tx, customer).await?;
    let branch = self::branch(&mut tx, &customer, &new.branch).await?;
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO projects (id, customer_id, branch_id, name, lat, lng, time_zone,
             accepted_on, warranty_months)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(id)
    .bind(customer.id)
    .bind(branch.id)
    .bind(&new.name)
    .bind(new.location.map(|l| l.0))
    .bind(new.location.map(|l| l.1))
    .bind(new.time_zone.as_deref().unwrap_or(&branch.time_zone))
    .bind(new.accepted_on)
    .bind(new.warranty_months)
    .execute(&mut *tx)
    .await
    .map_err(|e| {
        clash(
            e,
            &[(
                "projects_name_key",
                format!(
                    "customer {} already has a project named {:?}",
                    customer.name, new.name
                ),
            )],
        )
    })?;
    let project = project_by_id(&mut tx, id).await?;
    publish(&mut tx, &[events::project_added(&project, &branch)]).await?;
    tx.commit().await?;
    Ok(project)
}

async fn project_by_id(conn: &mut PgConnection, id: Uuid) -> Result<Project> {
    Ok(sqlx::query_as(&format!("{PROJECT} WHERE p.id = $1"))
        .bind(id)
        .fetch_one(conn)
        .await?)
}

/// A project named by id, or by a name; a name two customers use is
/// refused rather than guessed, unless `customer` narrows it.
pub async fn project(
    conn: &mut PgConnection,
    customer: Option<&Customer>,
    reference: &str,
) -> Result<Project> {
    let found: Vec<Project> = match Uuid::parse_str(reference) {
        Ok(id) => {
            sqlx::query_as(&format!("{PROJECT} WHERE p.id = $1"))
                .bind(id)
                .fetch_all(&mut *conn)
                .await?
        }
        Err(_) => {
            sqlx::query_as(&format!(
            "{PROJECT} WHERE lower(p.name) = lower($1) AND ($2::uuid IS NULL OR p.customer_id = $2)
             ORDER BY c.name LIMIT 10"
        ))
            .bind(reference)
            .bind(customer.map(|c| c.id))
            .fetch_all(&mut *conn)
            .await?
        }
    };
    let found: Vec<Project> = found
        .into_iter()
        .filter(|p| customer.is_none_or(|c| c.id == p.customer_id))
        .collect();
    match found.as_slice() {
        [] => Err(StoreError::NotFound(match customer {
            Some(c) => format!("customer {} has no project {reference:?}", c.name),
            None => format!("no project {reference:?}: name it by id or by its name"),
        })),
        [one] => Ok(one.clone()),
        several => Err(StoreError::Invalid(format!(
            "the project name {reference:?} is used by customers {}: name the project by id",
            several
                .iter()
                .map(|p| p.customer.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

pub async fn accept_project(pool: &PgPool, reference: &str, on: NaiveDate) -> Result<Project> {
    let mut tx = pool.begin().await?;
    let found = self::project(&mut tx, None, reference).await?;
    // Locked, so two moves of one project each announce what they moved from.
    let before: Project = sqlx::query_as(&format!("{PROJECT} WHERE p.id = $1 FOR UPDATE OF p"))
        .bind(found.id)
        .fetch_one(&mut *tx)
        .await?;
    sqlx::query("UPDATE projects SET accepted_on = $2 WHERE id = $1")
        .bind(before.id)
        .bind(on)
        .execute(&mut *tx)
        .await?;
    let project = project_by_id(&mut tx, before.id).await?;
    if project.accepted_on != before.accepted_on {
        publish(&mut tx, &[events::project_accepted(&before, &project)]).await?;
    }
    tx.commit().await?;
    Ok(project)
}

pub struct NewAsset {
    pub project: String,
    pub model: String,
    /// Adds the model to the catalogue when it is new.
    pub family: Option<String>,
    pub serial: String,
    pub price: Amount,
    pub currency: String,
    pub firmware: String,
}

pub async fn add_asset(pool: &PgPool, new: NewAsset) -> Result<Asset> {
    let mut tx = pool.begin().await?;
    let project = self::project(&mut tx, None, &new.project).await?;
    let model: Option<Uuid> =
        sqlx::query_scalar("SELECT id FROM models WHERE lower(name) = lower($1)")
            .bind(&new.model)
            .fetch_optional(&mut *tx)
            .await?;
    let model = match (model, &new.family) {
        (Some(id), _) => id,
        (None, Some(family)) => {
            // Two first assets of a new model at once: one inserts, both use it.
            sqlx::query(
                "INSERT INTO models (id, name, family) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            )
            .bind(Uuid::now_v7())
            .bind(&new.model)
            .bind(family)
            .execute(&mut *tx)
            .await?;
            sqlx::query_scalar("SELECT id FROM models WHERE lower(name) = lower($1)")
                .bind(&new.model)
                .fetch_one(&mut *tx)
                .await?
        }
        (None, None) => {
            return Err(StoreError::NotFound(format!(
                "model {:?} is not in the catalogue: give its family (camera, nvr, ptz, ...) to add it",
                new.model
            )));
        }
    };
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO assets (id, project_id, model_id, serial, price, currency, firmware)
         VALUES ($1, $2, $3, $4, $5::bigint / 100.0, $6, $7)",
    )
    .bind(id)
    .bind(project.id)
    .bind(model)
    .bind(&new.serial)
    .bind(new.price.0)
    .bind(&new.currency)
    .bind(&new.firmware)
    .execute(&mut *tx)
    .await
    .map_err(|e| {
        clash(
            e,
            &[(
                "assets_serial_key",
                format!(
                    "serial {} is already another asset's: serials are unique",
                    new.serial
                ),
            )],
        )
    })?;
    let asset = assets(&mut tx, "a.id = $1", id, true)
        .await?
        .pop()
        .ok_or_else(|| StoreError::NotFound("the asset vanished".into()))?;
    publish(&mut tx, &[events::asset_added(&asset)]).await?;
    tx.commit().await?;
    Ok(asset)
}

/// Assets matching `filter` (SQL over `a`, `p`, `b`, `c` with `$1` bound
/// to `value`), with their contract terms, in one query; at most
/// [`MAX_ASSETS`] when they are for showing (`listed`), all when a contract
/// is computed over them.
async fn assets<T>(
    conn: &mut PgConnection,
    filter: &str,
    value: T,
    listed: bool,
) -> Result<Vec<Asset>>
where
    T: for<'q> sqlx::Encode<'q, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send,
{
    let limit = if listed {
        MAX_ASSETS.to_string()
    } else {
        "ALL".to_owned()
    };
    let rows: Vec<AssetRow> = sqlx::query_as(&format!(
        "{ASSET} WHERE {filter} ORDER BY p.name, a.serial LIMIT {limit}"
    ))
    .bind(value)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().map(Asset::from).collect())
}

pub async fn asset(pool: &PgPool, serial: &str) -> Result<Option<Asset>> {
    let mut conn = pool.acquire().await?;
    Ok(
        assets(&mut conn, "upper(a.serial) = upper($1)", serial, true)
            .await?
            .pop(),
    )
}

pub async fn assets_of_branch(pool: &PgPool, branch: Uuid) -> Result<Vec<Asset>> {
    branch_assets(&mut *pool.acquire().await?, branch).await
}

pub async fn assets_of_customer(pool: &PgPool, customer: Uuid) -> Result<Vec<Asset>> {
    customer_assets(&mut *pool.acquire().await?, customer).await
}

pub struct CustomerDetail {
    pub customer: Customer,
    pub branches: Vec<Branch>,
    pub contacts: Vec<Contact>,
    pub projects: Vec<Project>,
    pub contracts: Vec<Contract>,
}

pub async fn customer_detail(pool: &PgPool, reference: &str) -> Result<CustomerDetail> {
    let mut conn = pool.acquire().await?;
    let customer = self::customer(&mut conn, reference).await?;
    let branches = sqlx::query_as(&format!("{BRANCH} WHERE customer_id = $1 ORDER BY name"))
        .bind(customer.id)
        .fetch_all(&mut *conn)
        .await?;
    let contacts = sqlx::query_as(&format!("{CONTACT} WHERE customer_id = $1 ORDER BY name"))
        .bind(customer.id)
        .fetch_all(&mut *conn)
        .await?;
    let projects = sqlx::query_as(&format!(
        "{PROJECT} WHERE p.customer_id = $1 ORDER BY p.name"
    ))
    .bind(customer.id)
    .fetch_all(&mut *conn)
    .await?;
    let contracts = contracts(&mut conn, Some(customer.id), None).await?;
    Ok(CustomerDetail {
        customer,
        branches,
        contacts,
        projects,
        contracts,
    })
}

async fn contracts(
    conn: &mut PgConnection,
    customer: Option<Uuid>,
    ending: Option<(NaiveDate, NaiveDate)>,
) -> Result<Vec<Contract>> {
    Ok(sqlx::query_as(&format!(
        "{CONTRACT}
         WHERE ($1::uuid IS NULL OR k.customer_id = $1)
           AND ($2::date IS NULL OR k.ends_on BETWEEN $2 AND $3)
         GROUP BY k.id, c.name ORDER BY k.ends_on, k.id LIMIT 1000"
    ))
    .bind(customer)
    .bind(ending.map(|e| e.0))
    .bind(ending.map(|e| e.1))
    .fetch_all(conn)
    .await?)
}

/// Contracts, of one customer when named, ending between two days when given.
pub async fn list_contracts(
    pool: &PgPool,
    customer: Option<&str>,
    ending: Option<(NaiveDate, NaiveDate)>,
) -> Result<Vec<Contract>> {
    let mut conn = pool.acquire().await?;
    let customer = match customer {
        Some(reference) => Some(self::customer(&mut conn, reference).await?.id),
        None => None,
    };
    contracts(&mut conn, customer, ending).await
}

async fn contract_by_id(conn: &mut PgConnection, id: Uuid) -> Result<Contract> {
    sqlx::query_as(&format!("{CONTRACT} WHERE k.id = $1 GROUP BY k.id, c.name"))
        .bind(id)
        .fetch_optional(conn)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("no contract {id}")))
}

pub struct NewContract {
    pub customer: String,
    pub projects: Vec<String>,
    pub serials: Vec<String>,
    pub start: NaiveDate,
    pub end: NaiveDate,
    pub term_months: u32,
    pub fee: Amount,
    pub currency: String,
}

/// Covered assets of `customer` named by serial; unknown serials and other
/// customers' assets are refused by name.
async fn covered(
    conn: &mut PgConnection,
    customer: &Customer,
    serials: &[String],
) -> Result<Vec<Asset>> {
    let upper: Vec<String> = serials.iter().map(|s| s.to_uppercase()).collect();
    let found = assets(conn, "upper(a.serial) = ANY($1)", &upper, false).await?;
    if let Some(missing) = serials
        .iter()
        .find(|s| !found.iter().any(|a| a.serial.eq_ignore_ascii_case(s)))
    {
        return Err(StoreError::NotFound(format!(
            "no asset with serial {missing}"
        )));
    }
    if let Some(foreign) = found.iter().find(|a| a.customer_id != customer.id) {
        return Err(StoreError::Invalid(format!(
            "asset {} belongs to customer {}, not {}: a contract covers its own customer's assets",
            foreign.serial, foreign.customer, customer.name
        )));
    }
    Ok(found)
}

/// Records `assets` as covered by `contract` for its term; `false` when
/// PostgreSQL refused because one of them is already under contract for
/// some of those days (the exclusion constraint). The transaction is
/// aborted then: the caller drops it and explains with
/// [`overlap_message`].
async fn cover(
    conn: &mut PgConnection,
    contract: Uuid,
    terms: (NaiveDate, NaiveDate),
    assets: &[Uuid],
) -> Result<bool> {
    let inserted = sqlx::query(
        "INSERT INTO contract_assets (contract_id, asset_id, during)
         SELECT $1, asset, daterange($2, $3, '[]') FROM UNNEST($4::uuid[]) AS asset
         ON CONFLICT (contract_id, asset_id) DO NOTHING",
    )
    .bind(contract)
    .bind(terms.0)
    .bind(terms.1)
    .bind(assets)
    .execute(&mut *conn)
    .await;
    match inserted {
        Ok(_) => Ok(true),
        Err(error)
            if error
                .as_database_error()
                .is_some_and(|e| e.code().as_deref() == Some("23P01")) =>
        {
            Ok(false)
        }
        Err(error) => Err(error.into()),
    }
}

/// The message for an overlap: which asset, which contract, which days.
/// Read after the failed transaction, on a fresh connection.
async fn overlap_message(
    pool: &PgPool,
    assets: &[Uuid],
    terms: (NaiveDate, NaiveDate),
) -> Result<String> {
    let clash: Option<(String, Uuid, NaiveDate, NaiveDate)> = sqlx::query_as(
        "SELECT a.serial, k.id, k.starts_on, k.ends_on
         FROM contract_assets ca
         JOIN contracts k ON k.id = ca.contract_id
         JOIN assets a ON a.id = ca.asset_id
         WHERE ca.asset_id = ANY($1) AND ca.during && daterange($2, $3, '[]')
         ORDER BY a.serial LIMIT 1",
    )
    .bind(assets)
    .bind(terms.0)
    .bind(terms.1)
    .fetch_optional(pool)
    .await?;
    Ok(match clash {
        Some((serial, contract, start, end)) => format!(
            "asset {serial} is already covered by contract {contract} from {start} to {end}: one contract per asset at a time; start after {end} or leave {serial} out"
        ),
        None => "an asset is already covered by another contract for some of these days: one contract per asset at a time".into(),
    })
}

pub async fn create_contract(pool: &PgPool, new: NewContract) -> Result<Contract> {
    let mut tx = pool.begin().await?;
    let customer = self::customer(&mut tx, &new.customer).await?;
    let mut serials = new.serials.clone();
    for reference in &new.projects {
        let project = self::project(&mut tx, Some(&customer), reference).await?;
        // A project covers the assets it has now; assets added to it later
        // are added to the contract with ChangeCoverage.
        serials.extend(
            assets(&mut tx, "a.project_id = $1", project.id, false)
                .await?
                .into_iter()
                .map(|a| a.serial),
        );
    }
    serials.sort_by_key(|s| s.to_uppercase());
    serials.dedup_by(|a, b| a.eq_ignore_ascii_case(b));
    let assets = covered(&mut tx, &customer, &serials).await?;
    check(&assets, new.fee, &new.currency, new.term_months)?;
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO contracts (id, customer_id, starts_on, ends_on, fee, currency)
         VALUES ($1, $2, $3, $4, $5::bigint / 100.0, $6)",
    )
    .bind(id)
    .bind(customer.id)
    .bind(new.start)
    .bind(new.end)
    .bind(new.fee.0)
    .bind(&new.currency)
    .execute(&mut *tx)
    .await?;
    let ids: Vec<Uuid> = assets.iter().map(|a| a.id).collect();
    let terms = (new.start, new.end);
    if !cover(&mut tx, id, terms, &ids).await? {
        drop(tx);
        return Err(StoreError::Refused(
            overlap_message(pool, &ids, terms).await?,
        ));
    }
    let contract = contract_by_id(&mut tx, id).await?;
    publish(&mut tx, &[events::contract_created(&contract)]).await?;
    tx.commit().await?;
    Ok(contract)
}

/// P6 over `assets`: one currency, the contract's, and the fee under the cap.
fn check(assets: &[Asset], fee: Amount, currency: &str, months: u32) -> Result<()> {
    let prices: Vec<(Amount, &str)> = assets
        .iter()
        .map(|a| (Amount(a.price_cents), a.currency.as_str()))
        .collect();
    let price = domain::covered_price(currency, &prices).map_err(StoreError::Refused)?;
    domain::check_cap(fee, currency, months, price).map_err(StoreError::Refused)
}

/// Adds and removes covered assets, under the contract's row lock so two
/// changes of one contract check the cap one after the other.
pub async fn change_coverage(
    pool: &PgPool,
    contract: &str,
    add: &[String],
    remove: &[String],
) -> Result<Contract> {
    let id = Uuid::parse_str(contract)
        .map_err(|_| StoreError::NotFound(format!("no contract {contract:?}: name it by id")))?;
    let mut tx = pool.begin().await?;
    let locked: Option<(Uuid, NaiveDate, NaiveDate)> = sqlx::query_as(
        "SELECT customer_id, starts_on, ends_on FROM contracts WHERE id = $1 FOR UPDATE",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let (customer_id, start, end) =
        locked.ok_or_else(|| StoreError::NotFound(format!("no contract {id}")))?;
    let current = contract_by_id(&mut tx, id).await?;
    let customer = self::customer(&mut tx, &customer_id.to_string()).await?;
    if let Some(absent) = remove
        .iter()
        .find(|s| !current.serials.iter().any(|c| c.eq_ignore_ascii_case(s)))
    {
        return Err(StoreError::Invalid(format!(
            "contract {id} does not cover {absent}: nothing to remove"
        )));
    }
    let mut serials: Vec<String> = current
        .serials
        .iter()
        .filter(|s| !remove.iter().any(|r| r.eq_ignore_ascii_case(s)))
        .chain(add)
        .cloned()
        .collect();
    serials.sort_by_key(|s| s.to_uppercase());
    serials.dedup_by(|a, b| a.eq_ignore_ascii_case(b));
    let assets = covered(&mut tx, &customer, &serials).await?;
    let months = domain::term_months(start, end).map_err(StoreError::Refused)?;
    check(
        &assets,
        Amount(current.fee_cents),
        &current.currency,
        months,
    )
    .map_err(|e| match e {
        StoreError::Refused(why) if !remove.is_empty() => {
            StoreError::Refused(format!("without {}, {why}", remove.join(", ")))
        }
        other => other,
    })?;
    let upper: Vec<String> = remove.iter().map(|s| s.to_uppercase()).collect();
    sqlx::query(
        "DELETE FROM contract_assets ca USING assets a
         WHERE ca.contract_id = $1 AND a.id = ca.asset_id AND upper(a.serial) = ANY($2)",
    )
    .bind(id)
    .bind(&upper)
    .execute(&mut *tx)
    .await?;
    let ids: Vec<Uuid> = assets.iter().map(|a| a.id).collect();
    if !cover(&mut tx, id, (start, end), &ids).await? {
        drop(tx);
        return Err(StoreError::Refused(
            overlap_message(pool, &ids, (start, end)).await?,
        ));
    }
    let contract = contract_by_id(&mut tx, id).await?;
    let covers =
        |list: &[String], serial: &String| list.iter().any(|s| s.eq_ignore_ascii_case(serial));
    let added: Vec<String> = contract
        .serials
        .iter()
        .filter(|s| !covers(&current.serials, s))
        .cloned()
        .collect();
    let removed: Vec<String> = current
        .serials
        .iter()
        .filter(|s| !covers(&contract.serials, s))
        .cloned()
        .collect();
    if !added.is_empty() || !removed.is_empty() {
        publish(
            &mut tx,
            &[events::coverage_changed(&contract, added, removed)],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(contract)
}

/// Who holds an email address or a phone number: a contact, a branch's
/// notice address, a customer's own (the caller ranks them).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Holder {
    pub customer_id: Uuid,
    pub customer: String,
    /// `contact`, `branch` or `customer`.
    pub kind: String,
    pub contact_id: Option<Uuid>,
    /// The contact's branch, or the branch itself.
    pub branch_id: Option<Uuid>,
    /// The contact's or branch's name (the customer's for a customer).
    pub name: String,
    /// The branch's name and region, when there is a branch.
    pub branch: Option<String>,
    pub region: Option<String>,
}

/// What a holder is looked up by: both are stored normalised, so each is
/// an index probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    /// Lower-case.
    Email(String),
    /// E.164.
    Phone(String),
}

impl Key {
    /// The address or number itself.
    pub fn value(&self) -> &str {
        match self {
            Key::Email(value) | Key::Phone(value) => value,
        }
    }
}

/// A holder, and the key it holds.
#[derive(sqlx::FromRow)]
struct Held {
    key: String,
    #[sqlx(flatten)]
    holder: Holder,
}

/// The most holders one lookup returns: a key is a contact's (unique), or
/// shared by a few branches and customers.
const MAX_HOLDERS: i64 = 1000;

/// Who holds each of `keys`, with the key each holds (addresses and
/// numbers never look alike): one statement for all of them, each part a
/// probe of a unique or partial index.
pub async fn holders_of(conn: &mut PgConnection, keys: &[Key]) -> Result<Vec<(String, Holder)>> {
    let (mut emails, mut phones) = (Vec::new(), Vec::new());
    for key in keys {
        match key {
            Key::Email(email) => emails.push(email.as_str()),
            Key::Phone(phone) => phones.push(phone.as_str()),
        }
    }
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let held: Vec<Held> = sqlx::query_as(
        "SELECT k.email AS key, k.customer_id, c.name AS customer, 'contact' AS kind,
                k.id AS contact_id, k.branch_id, k.name, b.name AS branch, b.region
           FROM contacts k JOIN customers c ON c.id = k.customer_id
           LEFT JOIN branches b ON b.id = k.branch_id
          WHERE k.email = ANY($1)
         UNION ALL
         SELECT b.notice_email, b.customer_id, c.name, 'branch', NULL, b.id, b.name, b.name,
                b.region
           FROM branches b JOIN customers c ON c.id = b.customer_id
          WHERE b.notice_email = ANY($1)
         UNION ALL
         SELECT c.email, c.id, c.name, 'customer', NULL, NULL, c.name, NULL, NULL
           FROM customers c WHERE c.email = ANY($1)
         UNION ALL
         SELECT k.phone, k.customer_id, c.name, 'contact', k.id, k.branch_id, k.name, b.name,
                b.region
           FROM contacts k JOIN customers c ON c.id = k.customer_id
           LEFT JOIN branches b ON b.id = k.branch_id
          WHERE k.phone = ANY($2)
         UNION ALL
         SELECT c.phone, c.id, c.name, 'customer', NULL, NULL, c.name, NULL, NULL
           FROM customers c WHERE c.phone = ANY($2)
         LIMIT $3",
    )
    .bind(&emails)
    .bind(&phones)
    .bind(MAX_HOLDERS)
    .fetch_all(conn)
    .await?;
    Ok(held.into_iter().map(|h| (h.key, h.holder)).collect())
}

/// Who holds `key`.
pub async fn holders(conn: &mut PgConnection, key: &Key) -> Result<Vec<Holder>> {
    let held = holders_of(conn, std::slice::from_ref(key)).await?;
    Ok(held.into_iter().map(|(_, holder)| holder).collect())
}

pub async fn holders_of_email(pool: &PgPool, email: &str) -> Result<Vec<Holder>> {
    holders(&mut *pool.acquire().await?, &Key::Email(email.to_owned())).await
}

pub async fn holders_of_phone(pool: &PgPool, phone: &str) -> Result<Vec<Holder>> {
    holders(&mut *pool.acquire().await?, &Key::Phone(phone.to_owned())).await
}

/// The assets whose serials are among `serials` (upper-case), with their
/// terms: one probe of the serial index for all of them (each names one
/// asset at most, so there are no more than `serials`).
pub async fn assets_by_serials(conn: &mut PgConnection, serials: &[String]) -> Result<Vec<Asset>> {
    if serials.is_empty() {
        return Ok(Vec::new());
    }
    assets(conn, "upper(a.serial) = ANY($1)", serials, false).await
}

/// A branch's assets (at most [`MAX_ASSETS`]), with their terms.
pub async fn branch_assets(conn: &mut PgConnection, branch: Uuid) -> Result<Vec<Asset>> {
    assets(conn, "p.branch_id = $1", branch, true).await
}

/// A customer's assets (at most [`MAX_ASSETS`]), with their terms.
pub async fn customer_assets(conn: &mut PgConnection, customer: Uuid) -> Result<Vec<Asset>> {
    assets(conn, "p.customer_id = $1", customer, true).await
}

/// A customer with one of its branches and one of its contacts, when
/// named: what an entitlement answers with, in one query.
pub async fn parties(
    pool: &PgPool,
    customer: Uuid,
    branch: Option<Uuid>,
    contact: Option<Uuid>,
) -> Result<(Customer, Option<Branch>, Option<Contact>)> {
    let row = sqlx::query(
        "SELECT c.id, c.name, c.email, c.phone,
                b.id AS b_id, b.name AS b_name, b.address AS b_address,
                b.time_zone AS b_time_zone, b.region AS b_region,
                b.notice_email AS b_notice_email,
                k.id AS k_id, k.branch_id AS k_branch_id, k.name AS k_name,
                k.email AS k_email, k.phone AS k_phone
           FROM customers c
           LEFT JOIN branches b ON b.id = $2 AND b.customer_id = c.id
           LEFT JOIN contacts k ON k.id = $3 AND k.customer_id = c.id
          WHERE c.id = $1",
    )
    .bind(customer)
    .bind(branch)
    .bind(contact)
    .fetch_optional(pool)
    .await?
    .ok_or_else(|| StoreError::NotFound(format!("no customer {customer}")))?;
    let customer = Customer::from_row(&row)?;
    let branch = match row.try_get::<Option<Uuid>, _>("b_id")? {
        Some(id) => Some(Branch {
            id,
            customer_id: customer.id,
            name: row.try_get("b_name")?,
            address: row.try_get("b_address")?,
            time_zone: row.try_get("b_time_zone")?,
            region: row.try_get("b_region")?,
            notice_email: row.try_get("b_notice_email")?,
        }),
        None => None,
    };
    let contact = match row.try_get::<Option<Uuid>, _>("k_id")? {
        Some(id) => Some(Contact {
            id,
            customer_id: customer.id,
            branch_id: row.try_get("k_branch_id")?,
            name: row.try_get("k_name")?,
            email: row.try_get("k_email")?,
            phone: row.try_get("k_phone")?,
        }),
        None => None,
    };
    Ok((customer, branch, contact))
}

impl Asset {
    /// The project it is in, as the asset's row carries it.
    pub fn project(&self) -> Project {
        Project {
            id: self.project_id,
            customer_id: self.customer_id,
            customer: self.customer.clone(),
            branch_id: self.branch_id,
            name: self.project.clone(),
            lat: self.lat,
            lng: self.lng,
            time_zone: self.time_zone.clone(),
            accepted_on: self.accepted_on,
            warranty_months: self.warranty_months,
        }
    }
}

/// Takes the notice scan for this transaction: another process scanning
/// is waited for, and what it announced is then seen as announced.
pub async fn lock_notice_scan(conn: &mut PgConnection) -> Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('contracts.notices'))")
        .execute(conn)
        .await?;
    Ok(())
}

/// Assets whose warranty or a contract ends around `from`..=`to`, with
/// their contract terms. The window over warranties is coarse (the month
/// after the acceptance, as PostgreSQL adds months): the caller widens it
/// by a day or two and [`domain::ends_to_announce`] decides on the exact,
/// derived last day.
pub async fn assets_ending(
    conn: &mut PgConnection,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Vec<Asset>> {
    let ids: Vec<Uuid> = sqlx::query_scalar(
        "SELECT a.id FROM assets a JOIN projects p ON p.id = a.project_id
         WHERE (p.accepted_on + make_interval(months => p.warranty_months))::date
               BETWEEN $1 AND $2
         UNION
         SELECT ca.asset_id FROM contract_assets ca JOIN contracts k ON k.id = ca.contract_id
         WHERE k.ends_on BETWEEN $1 AND $2",
    )
    .bind(from)
    .bind(to)
    .fetch_all(&mut *conn)
    .await?;
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    assets(conn, "a.id = ANY($1)", &ids, false).await
}

/// The ends already announced for `assets`, from `since` on.
pub async fn noticed(
    conn: &mut PgConnection,
    assets: &[Uuid],
    since: NaiveDate,
) -> Result<Vec<(Uuid, String, NaiveDate)>> {
    Ok(sqlx::query_as(
        "SELECT asset_id, kind, ends_on FROM notices WHERE asset_id = ANY($1) AND ends_on >= $2",
    )
    .bind(assets)
    .bind(since)
    .fetch_all(conn)
    .await?)
}

pub async fn branches(conn: &mut PgConnection, ids: &[Uuid]) -> Result<Vec<Branch>> {
    Ok(sqlx::query_as(&format!("{BRANCH} WHERE id = ANY($1)"))
        .bind(ids)
        .fetch_all(conn)
        .await?)
}

/// One end of one asset announced to a branch by the mail of `event_id`.
pub struct NewNotice {
    pub asset_id: Uuid,
    pub kind: &'static str,
    pub ends_on: NaiveDate,
    pub branch_id: Uuid,
    pub recipient: String,
    pub event_id: Uuid,
}

/// Records `notices`; answers those it recorded: a notice recorded before
/// (asset, kind and end date) is left out, so its end is announced once.
pub async fn record_notices(
    conn: &mut PgConnection,
    notices: &[NewNotice],
) -> Result<Vec<(Uuid, String, NaiveDate)>> {
    Ok(sqlx::query_as(
        "INSERT INTO notices (asset_id, kind, ends_on, branch_id, recipient, event_id)
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::date[], $4::uuid[], $5::text[],
             $6::uuid[])
         ON CONFLICT (asset_id, kind, ends_on) DO NOTHING
         RETURNING asset_id, kind, ends_on",
    )
    .bind(db::column(notices, |n| n.asset_id))
    .bind(db::column(notices, |n| n.kind))
    .bind(db::column(notices, |n| n.ends_on))
    .bind(db::column(notices, |n| n.branch_id))
    .bind(db::column(notices, |n| n.recipient.as_str()))
    .bind(db::column(notices, |n| n.event_id))
    .fetch_all(conn)
    .await?)
}
