//! `hotline.contracts.v1.ContractsService`: checks each caller's role and
//! each field, asks the store, and derives warranty and coverage for the
//! answer (on the asked day, else today in the project's time zone).

use std::time::Duration;

use chrono::{NaiveDate, Utc};
use hotline_kit::grpc::store_failed;
use hotline_kit::{
    auth::{Role, authorize},
    bus::outbox::OutboxSignal,
    input::line,
    phone,
};
use hotline_proto::contracts::v1::{
    self as pb, contracts_service_server::ContractsService, entitlement_request::Key,
};
use sqlx::PgPool;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    domain::{self, Amount, Coverage},
    import::{Faults, Import},
    store::{self, StoreError},
};

/// Who reads the installed base: everyone at the desk.
const READERS: &[Role] = &[
    Role::Agent,
    Role::Dispatcher,
    Role::Technician,
    Role::Manager,
];
/// Who changes it (admin always passes): what is sold and promised is a
/// manager's decision.
const WRITERS: &[Role] = &[Role::Manager];

pub(crate) const MAX_NAME_CHARS: usize = 200;
const MAX_ADDRESS_CHARS: usize = 500;
/// Serials, models, families, regions, time zones, firmware versions.
pub(crate) const MAX_SHORT_CHARS: usize = 100;
pub(crate) const MAX_EMAIL_CHARS: usize = 254;
pub(crate) const MAX_PHONE_CHARS: usize = 40;
/// Amounts and coordinates, with room for spaces.
pub(crate) const MAX_NUMBER_CHARS: usize = 30;
/// Dates, `YYYY-MM-DD`, with room for spaces.
pub(crate) const MAX_DATE_CHARS: usize = 20;
/// Why a contact needs an email or a phone.
pub(crate) const UNREACHABLE_CONTACT: &str =
    "give the contact an email or a phone: that is how a caller is recognised";
/// Serials and projects one contract request may name.
const MAX_COVERED: usize = 10_000;
const DEFAULT_LIMIT: u32 = 100;
/// The import's method: it may take longer than other calls.
pub const IMPORT_METHOD: &str = "/hotline.contracts.v1.ContractsService/ImportInstalledBase";
/// How long an import may take, upload included: a million assets take
/// about a minute on a small machine.
pub const IMPORT_LIMIT: Duration = Duration::from_secs(600);
/// How long an upload may pause between two pieces before the import is
/// given up (its transaction holds the import lock).
const IMPORT_PAUSE: Duration = Duration::from_secs(60);
/// The largest file imported at once.
const MAX_IMPORT_BYTES: u64 = 1 << 30;
/// Staged rows go to PostgreSQL in pieces of about this size.
const COPY_PIECE: usize = 1 << 20;
const MAX_LIMIT: u32 = 500;

pub struct ContractsApi {
    pool: PgPool,
    /// For contacts' national numbers; see `ContractsConfig`.
    country_code: String,
    /// Woken after each write: its events are in the outbox.
    relay: OutboxSignal,
}

impl ContractsApi {
    pub fn new(pool: PgPool, country_code: String, relay: OutboxSignal) -> Self {
        Self {
            pool,
            country_code,
            relay,
        }
    }

    /// `written`, once its events are committed: the relay publishes them now.
    fn committed<T>(&self, written: T) -> T {
        self.relay.committed();
        written
    }

    fn phone(&self, value: &str, name: &str) -> Result<Option<String>, Status> {
        phone_number(value, name, &self.country_code)
    }
}

/// A phone number in E.164, by the rule intake matches callers with;
/// national numbers get `country_code`.
pub(crate) fn phone_number(
    value: &str,
    name: &str,
    country_code: &str,
) -> Result<Option<String>, Status> {
    let Some(raw) = line(value, name, MAX_PHONE_CHARS)? else {
        return Ok(None);
    };
    match phone::normalise(&raw, country_code) {
        Some(e164) => Ok(Some(e164)),
        None => Err(Status::invalid_argument(format!(
            "{name} {raw:?} is not a phone number: write it in international form, like +49 30 1234567{}",
            if country_code.is_empty() {
                " (no contracts.country_code is set to place a national number)"
            } else {
                ""
            }
        ))),
    }
}

fn status(error: StoreError) -> Status {
    match error {
        StoreError::NotFound(why) => Status::not_found(why),
        StoreError::Clash(why) => Status::already_exists(why),
        StoreError::Invalid(why) => Status::invalid_argument(why),
        StoreError::Refused(why) => Status::failed_precondition(why),
        StoreError::Database(error) => store_failed("the contracts store", &error.into()),
        StoreError::Outbox(error) => store_failed("the contracts store", &error),
    }
}

fn invalid(why: String) -> Status {
    Status::invalid_argument(why)
}

/// A required one-line field.
pub(crate) fn required(value: &str, name: &str, max: usize) -> Result<String, Status> {
    line(value, name, max)?.ok_or_else(|| Status::invalid_argument(format!("give the {name}")))
}

pub(crate) fn email(value: &str, name: &str) -> Result<Option<String>, Status> {
    line(value, name, MAX_EMAIL_CHARS)?
        .map(|e| domain::email(&e).map_err(|why| invalid(format!("{name}: {why}"))))
        .transpose()
}

pub(crate) fn date(value: &str, name: &str) -> Result<NaiveDate, Status> {
    let value = required(value, name, MAX_DATE_CHARS)?;
    domain::date(&value, name).map_err(invalid)
}

/// An amount (a price, a fee) that `NUMERIC(14,2)` holds.
pub(crate) fn amount(value: &str, name: &str) -> Result<Amount, Status> {
    let amount: Amount = required(value, name, MAX_NUMBER_CHARS)?
        .parse()
        .map_err(|why| invalid(format!("{name}: {why}")))?;
    if !amount.fits_column() {
        return Err(Status::invalid_argument(format!("{name} is too large")));
    }
    Ok(amount)
}

/// A required IANA time zone, by its canonical name.
pub(crate) fn time_zone(value: &str, name: &str) -> Result<String, Status> {
    let value = required(value, name, MAX_SHORT_CHARS)?;
    Ok(domain::time_zone(&value)
        .map_err(invalid)?
        .name()
        .to_owned())
}

/// A site's location: both coordinates or neither, on the globe.
pub(crate) fn location(lat: Option<f64>, lng: Option<f64>) -> Result<Option<(f64, f64)>, Status> {
    match (lat, lng) {
        (None, None) => Ok(None),
        (Some(lat), Some(lng))
            if (-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lng) =>
        {
            Ok(Some((lat, lng)))
        }
        (Some(_), Some(_)) => Err(Status::invalid_argument(
            "lat must be between -90 and 90 and lng between -180 and 180",
        )),
        _ => Err(Status::invalid_argument(
            "give both lat and lng, or neither",
        )),
    }
}

/// A model's family (`camera`, `nvr`, ...), lower-cased as the catalogue
/// keeps it.
pub(crate) fn family(value: &str, name: &str) -> Result<Option<String>, Status> {
    Ok(line(value, name, MAX_SHORT_CHARS)?.map(|f| f.to_lowercase()))
}

/// The asked day, when there is one.
fn on(value: &str) -> Result<Option<NaiveDate>, Status> {
    line(value, "on", MAX_DATE_CHARS)?
        .map(|d| domain::date(&d, "on").map_err(invalid))
        .transpose()
}

/// Names of projects or serials, each a checked line; empty ones skipped.
fn references(values: &[String], name: &str, max: usize) -> Result<Vec<String>, Status> {
    if values.len() > MAX_COVERED {
        return Err(Status::invalid_argument(format!(
            "name at most {MAX_COVERED} {name} at once"
        )));
    }
    values
        .iter()
        .filter_map(|v| line(v, name, max).transpose())
        .collect()
}

fn day(date: Option<NaiveDate>) -> String {
    date.map(|d| d.to_string()).unwrap_or_default()
}

fn months(value: i32) -> u32 {
    u32::try_from(value).unwrap_or(domain::DEFAULT_WARRANTY_MONTHS)
}

fn customer(customer: &store::Customer) -> pb::Customer {
    pb::Customer {
        id: customer.id.to_string(),
        name: customer.name.clone(),
        email: customer.email.clone().unwrap_or_default(),
        phone: customer.phone.clone().unwrap_or_default(),
    }
}

fn branch(branch: &store::Branch) -> pb::Branch {
    pb::Branch {
        id: branch.id.to_string(),
        customer_id: branch.customer_id.to_string(),
        name: branch.name.clone(),
        address: branch.address.clone(),
        time_zone: branch.time_zone.clone(),
        region: branch.region.clone(),
        notice_email: branch.notice_email.clone(),
    }
}

fn contact(contact: &store::Contact) -> pb::Contact {
    pb::Contact {
        id: contact.id.to_string(),
        customer_id: contact.customer_id.to_string(),
        branch_id: contact.branch_id.map(|b| b.to_string()).unwrap_or_default(),
        name: contact.name.clone(),
        email: contact.email.clone().unwrap_or_default(),
        phone: contact.phone.clone().unwrap_or_default(),
    }
}

fn project(project: &store::Project) -> pb::Project {
    pb::Project {
        id: project.id.to_string(),
        customer_id: project.customer_id.to_string(),
        customer: project.customer.clone(),
        branch_id: project.branch_id.to_string(),
        name: project.name.clone(),
        lat: project.lat,
        lng: project.lng,
        time_zone: project.time_zone.clone(),
        accepted_on: project.accepted_on.to_string(),
        warranty_months: project.warranty_months,
        warranty_until: day(domain::warranty_until(
            project.accepted_on,
            months(project.warranty_months),
        )),
    }
}

/// An asset with its warranty and its coverage on `on` (else today in its
/// project's time zone), derived now from what is stored.
fn asset(asset: &store::Asset, on: Option<NaiveDate>) -> (pb::Asset, Coverage) {
    let on = on.unwrap_or_else(|| domain::today_at(Utc::now(), &asset.time_zone));
    let until = domain::warranty_until(asset.accepted_on, months(asset.warranty_months));
    let coverage = match until {
        Some(until) => domain::coverage_on(on, until, &asset.terms),
        None => domain::CoverageOn {
            coverage: Coverage::None,
            until: None,
            contract: None,
            reason: "the warranty cannot be computed from the acceptance date".into(),
        },
    };
    let answer = pb::Asset {
        id: asset.id.to_string(),
        serial: asset.serial.clone(),
        model: asset.model.clone(),
        family: asset.family.clone(),
        project_id: asset.project_id.to_string(),
        project: asset.project.clone(),
        customer_id: asset.customer_id.to_string(),
        customer: asset.customer.clone(),
        price: Amount(asset.price_cents).to_string(),
        currency: asset.currency.clone(),
        firmware: asset.firmware.clone(),
        warranty_until: day(until),
        coverage: pb_coverage(coverage.coverage) as i32,
        covered_until: day(coverage.until),
        contract_id: coverage.contract.map(|c| c.to_string()).unwrap_or_default(),
        reason: coverage.reason,
        on: on.to_string(),
    };
    (answer, coverage.coverage)
}

fn pb_coverage(coverage: Coverage) -> pb::Coverage {
    match coverage {
        Coverage::None => pb::Coverage::None,
        Coverage::Warranty => pb::Coverage::Warranty,
        Coverage::Contract => pb::Coverage::Contract,
    }
}

fn contract(contract: &store::Contract) -> pb::Contract {
    let term = domain::term_months(contract.starts_on, contract.ends_on).unwrap_or(0);
    pb::Contract {
        id: contract.id.to_string(),
        customer_id: contract.customer_id.to_string(),
        customer: contract.customer.clone(),
        start: contract.starts_on.to_string(),
        end: contract.ends_on.to_string(),
        term_months: i32::try_from(term).unwrap_or(0),
        fee: Amount(contract.fee_cents).to_string(),
        currency: contract.currency.clone(),
        serials: contract.serials.clone(),
        covered_price: Amount(contract.covered_cents).to_string(),
        max_fee: domain::max_fee(Amount(contract.covered_cents), term).to_string(),
    }
}

/// The entitlement over `assets`: the best coverage among them (warranty,
/// contract, none), how long it lasts, and why, in words.
fn entitlement(
    assets: &[store::Asset],
    on: Option<NaiveDate>,
    whose: &str,
) -> (Vec<pb::Asset>, Coverage, String, String) {
    let shown: Vec<(pb::Asset, Coverage)> = assets.iter().map(|a| asset(a, on)).collect();
    let best = shown
        .iter()
        .map(|(_, c)| *c)
        .max()
        .unwrap_or(Coverage::None);
    let until = shown
        .iter()
        .filter(|(_, c)| *c == best && best != Coverage::None)
        .map(|(a, _)| a.covered_until.clone())
        .max()
        .unwrap_or_default();
    let reason = match shown.as_slice() {
        [] => format!("no assets are recorded for {whose}"),
        [(one, _)] => format!("{} ({}): {}", one.serial, one.model, one.reason),
        many => {
            let count = |kind| many.iter().filter(|(_, c)| *c == kind).count();
            let more = if many.len() as i64 >= store::MAX_ASSETS {
                " (the first shown)"
            } else {
                ""
            };
            format!(
                "{} assets of {whose}{more}: {} in warranty, {} under contract, {} not covered",
                many.len(),
                count(Coverage::Warranty),
                count(Coverage::Contract),
                count(Coverage::None)
            )
        }
    };
    (
        shown.into_iter().map(|(a, _)| a).collect(),
        best,
        until,
        reason,
    )
}

impl ContractsApi {
    async fn entitled_holder(
        &self,
        holders: Vec<store::Holder>,
        key: &str,
        on: Option<NaiveDate>,
    ) -> Result<pb::EntitlementResponse, Status> {
        let mut customers: Vec<Uuid> = holders.iter().map(|h| h.customer_id).collect();
        customers.sort_unstable();
        customers.dedup();
        match customers.as_slice() {
            [] => Ok(pb::EntitlementResponse {
                r#match: pb::Match::Unknown as i32,
                coverage: pb::Coverage::None as i32,
                reason: format!("no contact, branch or customer is known by {key}"),
                ..Default::default()
            }),
            [one] => {
                // The most specific holder speaks: a contact, then a branch,
                // then the customer itself.
                let rank = |h: &store::Holder| match h.kind.as_str() {
                    "contact" => 0,
                    "branch" => 1,
                    _ => 2,
                };
                let best = holders.iter().map(rank).min().unwrap_or(2);
                let chosen: Vec<&store::Holder> =
                    holders.iter().filter(|h| rank(h) == best).collect();
                let mut branches: Vec<Uuid> = chosen.iter().filter_map(|h| h.branch_id).collect();
                branches.dedup();
                let branch = match branches.as_slice() {
                    [only] => Some(*only),
                    _ => None,
                };
                let contact = chosen.first().and_then(|h| h.contact_id);
                let (customer, branch, contact) = store::parties(&self.pool, *one, branch, contact)
                    .await
                    .map_err(status)?;
                let (assets, whose) = match &branch {
                    Some(b) => (
                        store::assets_of_branch(&self.pool, b.id)
                            .await
                            .map_err(status)?,
                        format!("{} {}", customer.name, b.name),
                    ),
                    None => (
                        store::assets_of_customer(&self.pool, customer.id)
                            .await
                            .map_err(status)?,
                        customer.name.clone(),
                    ),
                };
                Ok(found(customer, branch, contact, &assets, on, &whose))
            }
            several => Ok(pb::EntitlementResponse {
                r#match: pb::Match::Ambiguous as i32,
                coverage: pb::Coverage::None as i32,
                reason: format!(
                    "{key} belongs to {} customers: ask the caller which one",
                    several.len()
                ),
                candidates: holders
                    .iter()
                    .map(|h| pb::Candidate {
                        customer_id: h.customer_id.to_string(),
                        customer: h.customer.clone(),
                        via: match h.kind.as_str() {
                            "contact" => format!("contact {}", h.name),
                            "branch" => format!("branch {} notice email", h.name),
                            _ => "customer".into(),
                        },
                    })
                    .collect(),
                ..Default::default()
            }),
        }
    }
}

/// The answer for one customer found: its assets' coverage, and the
/// project when they are all in one.
fn found(
    customer: store::Customer,
    branch: Option<store::Branch>,
    contact: Option<store::Contact>,
    assets: &[store::Asset],
    on: Option<NaiveDate>,
    whose: &str,
) -> pb::EntitlementResponse {
    let mut projects: Vec<Uuid> = assets.iter().map(|a| a.project_id).collect();
    projects.sort_unstable();
    projects.dedup();
    let project = match projects.as_slice() {
        [_] => assets.first().map(store::Asset::project),
        _ => None,
    };
    let (assets, coverage, covered_until, reason) = entitlement(assets, on, whose);
    pb::EntitlementResponse {
        r#match: pb::Match::Found as i32,
        customer: Some(self::customer(&customer)),
        branch: branch.as_ref().map(self::branch),
        project: project.as_ref().map(self::project),
        assets,
        coverage: pb_coverage(coverage) as i32,
        covered_until,
        reason,
        candidates: Vec::new(),
        contact: contact.as_ref().map(self::contact),
    }
}

fn counts(counts: store::import::Counts) -> Option<pb::ImportCounts> {
    Some(pb::ImportCounts {
        created: counts.created,
        updated: counts.updated,
        unchanged: counts.unchanged,
    })
}

/// The answer to an import: what was written, or (with faults) nothing.
fn summary(rows: u64, written: store::import::Written, faults: Faults) -> pb::ImportSummary {
    let error_count = faults.count();
    pb::ImportSummary {
        rows,
        customers: counts(written.customers),
        branches: counts(written.branches),
        contacts: counts(written.contacts),
        projects: counts(written.projects),
        models: counts(written.models),
        assets: counts(written.assets),
        errors: faults
            .listed()
            .into_iter()
            .map(|(line, reason)| pb::ImportError { line, reason })
            .collect(),
        error_count,
    }
}

impl ContractsApi {
    /// Reads the file as it arrives, checking each row and streaming the
    /// assets into staging, then merges it; commits only a file without a
    /// fault.
    async fn import(
        &self,
        pieces: tonic::Streaming<pb::ImportChunk>,
    ) -> Result<pb::ImportSummary, Status> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(|e| status(StoreError::Database(e)))?;
        let outcome = self.import_in(&mut tx, pieces).await;
        // Ended before answering, either way: a refused file's lock is
        // released by then, so the caller's next import is not refused as
        // running (a dropped transaction rolls back only later).
        match outcome {
            Ok((summary, true)) => {
                tx.commit()
                    .await
                    .map_err(|e| status(StoreError::Database(e)))?;
                let written = [
                    &summary.customers,
                    &summary.branches,
                    &summary.contacts,
                    &summary.projects,
                    &summary.assets,
                ]
                .iter()
                .any(|c| c.is_some_and(|c| c.created + c.updated > 0));
                if written {
                    // The file is in; statistics that still describe the
                    // tables before it would only slow the lookups.
                    if let Err(error) = store::import::analyze(&self.pool).await {
                        tracing::warn!(%error, "cannot analyze the imported tables");
                    }
                }
                Ok(summary)
            }
            Ok((summary, false)) => {
                tx.rollback()
                    .await
                    .map_err(|e| status(StoreError::Database(e)))?;
                Ok(summary)
            }
            Err(refused) => {
                if let Err(error) = tx.rollback().await {
                    tracing::warn!(%error, "cannot roll back a refused import");
                }
                Err(refused)
            }
        }
    }

    /// [`Self::import`] in `tx`: the summary, and whether to commit.
    async fn import_in(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
        mut pieces: tonic::Streaming<pb::ImportChunk>,
    ) -> Result<(pb::ImportSummary, bool), Status> {
        let started = std::time::Instant::now();
        let tx = &mut **tx;
        store::import::prepare(tx).await.map_err(status)?;
        let mut file = Import::new(&self.country_code);
        let mut copy = store::import::assets_copy(tx).await.map_err(status)?;
        let mut encoded = Vec::with_capacity(2 * COPY_PIECE);
        let mut bytes = 0;
        // Sent until the file ends or is refused; a refused file's COPY is
        // aborted, so the transaction can roll back on a clean connection.
        let staged: Result<(), Status> = async {
            loop {
                let piece = match tokio::time::timeout(IMPORT_PAUSE, pieces.message()).await {
                    Err(_) => {
                        return Err(Status::deadline_exceeded(format!(
                            "the upload paused for more than {}s: nothing was written; send the file again",
                            IMPORT_PAUSE.as_secs()
                        )));
                    }
                    Ok(next) => match next? {
                        Some(piece) => piece,
                        None => break,
                    },
                };
                bytes += piece.data.len() as u64;
                if bytes > MAX_IMPORT_BYTES {
                    return Err(Status::invalid_argument(format!(
                        "the file is larger than {} MiB: import it in several files",
                        MAX_IMPORT_BYTES >> 20
                    )));
                }
                file.feed(&piece.data)?;
                store::import::encode_assets(&file.take_staged(), &mut encoded);
                if encoded.len() >= COPY_PIECE {
                    copy.send(std::mem::take(&mut encoded))
                        .await
                        .map_err(|e| status(StoreError::Database(e)))?;
                }
            }
            file.finish()?;
            store::import::encode_assets(&file.take_staged(), &mut encoded);
            copy.send(encoded)
                .await
                .map_err(|e| status(StoreError::Database(e)))?;
            Ok(())
        }
        .await;
        if let Err(refused) = staged {
            if let Err(error) = copy.abort("the file was refused").await {
                tracing::warn!(%error, "cannot abort a refused import's COPY");
            }
            return Err(refused);
        }
        copy.finish()
            .await
            .map_err(|e| status(StoreError::Database(e)))?;
        let rows = file.rows();
        // How long the upload, the checks and the staging took, before the merge.
        let read_s = started.elapsed().as_secs_f64();
        let (base, mut faults) = file.into_parts();
        let written = store::import::merge(tx, &base, &mut faults)
            .await
            .map_err(status)?;
        match written {
            Some(written) if faults.is_empty() => {
                tracing::info!(
                    rows,
                    bytes,
                    read_s,
                    total_s = started.elapsed().as_secs_f64(),
                    assets_created = written.assets.created,
                    assets_updated = written.assets.updated,
                    "installed base imported"
                );
                Ok((summary(rows, written, faults), true))
            }
            _ => {
                tracing::info!(
                    rows,
                    bytes,
                    read_s,
                    total_s = started.elapsed().as_secs_f64(),
                    faults = faults.count(),
                    "installed base refused"
                );
                Ok((
                    summary(rows, store::import::Written::default(), faults),
                    false,
                ))
            }
        }
    }
}

#[tonic::async_trait]
impl ContractsService for ContractsApi {
    async fn import_installed_base(
        &self,
        request: Request<tonic::Streaming<pb::ImportChunk>>,
    ) -> Result<Response<pb::ImportSummary>, Status> {
        authorize(&request, WRITERS)?;
        Ok(Response::new(self.import(request.into_inner()).await?))
    }

    async fn create_customer(
        &self,
        request: Request<pb::CreateCustomerRequest>,
    ) -> Result<Response<pb::Customer>, Status> {
        authorize(&request, WRITERS)?;
        let request = request.get_ref();
        let new = store::NewCustomer {
            name: required(&request.name, "name", MAX_NAME_CHARS)?,
            email: email(&request.email, "email")?,
            phone: self.phone(&request.phone, "phone")?,
        };
        let created = store::create_customer(&self.pool, new)
            .await
            .map_err(status)?;
        Ok(Response::new(customer(&created)))
    }

    async fn list_customers(
        &self,
        request: Request<pb::ListCustomersRequest>,
    ) -> Result<Response<pb::ListCustomersResponse>, Status> {
        authorize(&request, READERS)?;
        let request = request.get_ref();
        let text = line(&request.text, "text", MAX_NAME_CHARS)?;
        let limit = match request.limit {
            0 => DEFAULT_LIMIT,
            n => n.min(MAX_LIMIT),
        };
        let found = store::list_customers(&self.pool, text.as_deref(), i64::from(limit))
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ListCustomersResponse {
            customers: found.iter().map(customer).collect(),
        }))
    }

    async fn get_customer(
        &self,
        request: Request<pb::GetCustomerRequest>,
    ) -> Result<Response<pb::CustomerDetail>, Status> {
        authorize(&request, READERS)?;
        let reference = required(&request.get_ref().customer, "customer", MAX_NAME_CHARS)?;
        let detail = store::customer_detail(&self.pool, &reference)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::CustomerDetail {
            customer: Some(customer(&detail.customer)),
            branches: detail.branches.iter().map(branch).collect(),
            contacts: detail.contacts.iter().map(contact).collect(),
            projects: detail.projects.iter().map(project).collect(),
            contracts: detail.contracts.iter().map(contract).collect(),
        }))
    }

    async fn add_branch(
        &self,
        request: Request<pb::AddBranchRequest>,
    ) -> Result<Response<pb::Branch>, Status> {
        authorize(&request, WRITERS)?;
        let request = request.get_ref();
        let customer = required(&request.customer, "customer", MAX_NAME_CHARS)?;
        let new = store::NewBranch {
            name: required(&request.name, "name", MAX_NAME_CHARS)?,
            address: line(&request.address, "address", MAX_ADDRESS_CHARS)?.unwrap_or_default(),
            time_zone: time_zone(&request.time_zone, "time zone")?,
            region: line(&request.region, "region", MAX_SHORT_CHARS)?.unwrap_or_default(),
            notice_email: email(&request.notice_email, "notice email")?.ok_or_else(|| {
                Status::invalid_argument("give the notice email: the branch's notices go there")
            })?,
        };
        let added = store::add_branch(&self.pool, &customer, new)
            .await
            .map_err(status)?;
        Ok(Response::new(branch(&added)))
    }

    async fn add_contact(
        &self,
        request: Request<pb::AddContactRequest>,
    ) -> Result<Response<pb::Contact>, Status> {
        authorize(&request, WRITERS)?;
        let request = request.get_ref();
        let customer = required(&request.customer, "customer", MAX_NAME_CHARS)?;
        let new = store::NewContact {
            branch: line(&request.branch, "branch", MAX_NAME_CHARS)?,
            name: required(&request.name, "name", MAX_NAME_CHARS)?,
            email: email(&request.email, "email")?,
            phone: self.phone(&request.phone, "phone")?,
        };
        if new.email.is_none() && new.phone.is_none() {
            return Err(Status::invalid_argument(UNREACHABLE_CONTACT));
        }
        let added = store::add_contact(&self.pool, &customer, new)
            .await
            .map_err(status)?;
        Ok(Response::new(contact(&added)))
    }

    async fn add_project(
        &self,
        request: Request<pb::AddProjectRequest>,
    ) -> Result<Response<pb::Project>, Status> {
        authorize(&request, WRITERS)?;
        let request = request.get_ref();
        let customer = required(&request.customer, "customer", MAX_NAME_CHARS)?;
        let location = location(request.lat, request.lng)?;
        let warranty_months = match request.warranty_months {
            0 => domain::DEFAULT_WARRANTY_MONTHS as i32,
            n if (1..=domain::MAX_TERM_MONTHS as i32).contains(&n) => n,
            n => {
                return Err(Status::invalid_argument(format!(
                    "warranty months must be between 1 and {}, not {n}",
                    domain::MAX_TERM_MONTHS
                )));
            }
        };
        let time_zone = line(&request.time_zone, "time zone", MAX_SHORT_CHARS)?
            .map(|tz| domain::time_zone(&tz).map(|tz| tz.name().to_owned()))
            .transpose()
            .map_err(invalid)?;
        let new = store::NewProject {
            branch: required(&request.branch, "branch", MAX_NAME_CHARS)?,
            name: required(&request.name, "name", MAX_NAME_CHARS)?,
            location,
            time_zone,
            accepted_on: date(&request.accepted_on, "acceptance date")?,
            warranty_months,
        };
        let added = store::add_project(&self.pool, &customer, new)
            .await
            .map_err(status)
            .map(|written| self.committed(written))?;
        Ok(Response::new(project(&added)))
    }

    async fn accept_project(
        &self,
        request: Request<pb::AcceptProjectRequest>,
    ) -> Result<Response<pb::Project>, Status> {
        authorize(&request, WRITERS)?;
        let request = request.get_ref();
        let reference = required(&request.project, "project", MAX_NAME_CHARS)?;
        let on = date(&request.accepted_on, "acceptance date")?;
        let accepted = store::accept_project(&self.pool, &reference, on)
            .await
            .map_err(status)
            .map(|written| self.committed(written))?;
        Ok(Response::new(project(&accepted)))
    }

    async fn add_asset(
        &self,
        request: Request<pb::AddAssetRequest>,
    ) -> Result<Response<pb::Asset>, Status> {
        authorize(&request, WRITERS)?;
        let request = request.get_ref();
        let price = amount(&request.price, "price")?;
        let family = family(&request.family, "family")?;
        let new = store::NewAsset {
            project: required(&request.project, "project", MAX_NAME_CHARS)?,
            model: required(&request.model, "model", MAX_SHORT_CHARS)?,
            family,
            serial: required(&request.serial, "serial", MAX_SHORT_CHARS)?,
            price,
            currency: domain::currency(&request.currency).map_err(invalid)?,
            firmware: line(&request.firmware, "firmware", MAX_SHORT_CHARS)?.unwrap_or_default(),
        };
        let added = store::add_asset(&self.pool, new)
            .await
            .map_err(status)
            .map(|written| self.committed(written))?;
        Ok(Response::new(asset(&added, None).0))
    }

    async fn get_asset(
        &self,
        request: Request<pb::GetAssetRequest>,
    ) -> Result<Response<pb::Asset>, Status> {
        authorize(&request, READERS)?;
        let request = request.get_ref();
        let serial = required(&request.serial, "serial", MAX_SHORT_CHARS)?;
        let on = on(&request.on)?;
        let found = store::asset(&self.pool, &serial)
            .await
            .map_err(status)?
            .ok_or_else(|| Status::not_found(format!("no asset with serial {serial}")))?;
        Ok(Response::new(asset(&found, on).0))
    }

    async fn create_contract(
        &self,
        request: Request<pb::CreateContractRequest>,
    ) -> Result<Response<pb::Contract>, Status> {
        authorize(&request, WRITERS)?;
        let request = request.get_ref();
        let start = date(&request.start, "start")?;
        let end = date(&request.end, "end")?;
        let term_months = domain::term_months(start, end).map_err(invalid)?;
        let fee = amount(&request.fee, "fee")?;
        let new = store::NewContract {
            customer: required(&request.customer, "customer", MAX_NAME_CHARS)?,
            projects: references(&request.projects, "projects", MAX_NAME_CHARS)?,
            serials: references(&request.serials, "serials", MAX_SHORT_CHARS)?,
            start,
            end,
            term_months,
            fee,
            currency: domain::currency(&request.currency).map_err(invalid)?,
        };
        if new.projects.is_empty() && new.serials.is_empty() {
            return Err(Status::invalid_argument(
                "name what the contract covers: projects or serials",
            ));
        }
        let created = store::create_contract(&self.pool, new)
            .await
            .map_err(status)
            .map(|written| self.committed(written))?;
        Ok(Response::new(contract(&created)))
    }

    async fn change_coverage(
        &self,
        request: Request<pb::ChangeCoverageRequest>,
    ) -> Result<Response<pb::Contract>, Status> {
        authorize(&request, WRITERS)?;
        let request = request.get_ref();
        let id = required(&request.contract, "contract", MAX_SHORT_CHARS)?;
        let add = references(&request.add_serials, "serials to add", MAX_SHORT_CHARS)?;
        let remove = references(
            &request.remove_serials,
            "serials to remove",
            MAX_SHORT_CHARS,
        )?;
        if add.is_empty() && remove.is_empty() {
            return Err(Status::invalid_argument("name serials to add or to remove"));
        }
        let changed = store::change_coverage(&self.pool, &id, &add, &remove)
            .await
            .map_err(status)
            .map(|written| self.committed(written))?;
        Ok(Response::new(contract(&changed)))
    }

    async fn list_contracts(
        &self,
        request: Request<pb::ListContractsRequest>,
    ) -> Result<Response<pb::ListContractsResponse>, Status> {
        authorize(&request, READERS)?;
        let request = request.get_ref();
        let customer = line(&request.customer, "customer", MAX_NAME_CHARS)?;
        let ending = match request.expiring_within_days {
            0 => None,
            days => {
                let today = Utc::now().date_naive();
                let until = today
                    .checked_add_days(chrono::Days::new(u64::from(days)))
                    .ok_or_else(|| Status::invalid_argument("expiring within is too long"))?;
                Some((today, until))
            }
        };
        let found = store::list_contracts(&self.pool, customer.as_deref(), ending)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ListContractsResponse {
            contracts: found.iter().map(contract).collect(),
        }))
    }

    async fn entitlement(
        &self,
        request: Request<pb::EntitlementRequest>,
    ) -> Result<Response<pb::EntitlementResponse>, Status> {
        authorize(&request, READERS)?;
        let request = request.get_ref();
        let on = on(&request.on)?;
        let answer = match &request.key {
            Some(Key::Serial(serial)) => {
                let serial = required(serial, "serial", MAX_SHORT_CHARS)?;
                match store::asset(&self.pool, &serial).await.map_err(status)? {
                    None => pb::EntitlementResponse {
                        r#match: pb::Match::Unknown as i32,
                        coverage: pb::Coverage::None as i32,
                        reason: format!("no asset has serial {serial}"),
                        ..Default::default()
                    },
                    Some(found) => {
                        let (customer, branch, _) = store::parties(
                            &self.pool,
                            found.customer_id,
                            Some(found.branch_id),
                            None,
                        )
                        .await
                        .map_err(status)?;
                        let whose = format!("serial {}", found.serial);
                        self::found(customer, branch, None, &[found], on, &whose)
                    }
                }
            }
            Some(Key::Email(address)) => {
                let address = email(address, "email")?
                    .ok_or_else(|| Status::invalid_argument("give the email to look up"))?;
                let holders = store::holders_of_email(&self.pool, &address)
                    .await
                    .map_err(status)?;
                self.entitled_holder(holders, &address, on).await?
            }
            Some(Key::Phone(number)) => {
                let number = self
                    .phone(number, "phone")?
                    .ok_or_else(|| Status::invalid_argument("give the phone to look up"))?;
                let holders = store::holders_of_phone(&self.pool, &number)
                    .await
                    .map_err(status)?;
                self.entitled_holder(holders, &number, on).await?
            }
            None => {
                return Err(Status::invalid_argument(
                    "look up by phone, email or serial",
                ));
            }
        };
        Ok(Response::new(answer))
    }
}
