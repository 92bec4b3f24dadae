//! Events in and out of `contracts`: every new ticket's entitlement
//! (`ticket.created` in, `entitlement.resolved` out, [`Handler`]), and the
//! facts of its own writes, each enqueued in the write's transaction:
//! `project.added`, `project.accepted`, `asset.added`, `contract.created`,
//! `contract.coverage_changed`. They carry ids to act on and names to show,
//! so that dispatch, scheduling and the console need not call back.

use anyhow::Context;
use chrono::{NaiveDate, Utc};
use hotline_kit::{
    bus::{
        consumer::EventHandler,
        outbox::{self, envelope},
    },
    time::from_timestamp,
};
use hotline_proto::{
    contracts::v1 as pb,
    events::v1::{self as ev, EventEnvelope, event_envelope::Payload},
};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{
    domain::{self, Amount, Coverage},
    entitlement::{self, Match, Resolution},
    store::{Asset, Branch, Contract, Project},
};

/// Resolves each new ticket's entitlement and publishes it, in the
/// consumer's transaction (so once per ticket, whatever the redeliveries).
pub struct Handler {
    /// For national numbers in tickets' contacts; see `ContractsConfig`.
    pub country_code: String,
}

impl EventHandler for Handler {
    async fn handle(&self, conn: &mut PgConnection, event: &EventEnvelope) -> anyhow::Result<()> {
        self.handle_batch(conn, &[(event, tracing::Span::current())])
            .await
    }

    /// The tickets waiting together are resolved together: one lookup of
    /// their senders, one of the serials they name, one outbox insert.
    async fn handle_batch(
        &self,
        conn: &mut PgConnection,
        events: &[(&EventEnvelope, tracing::Span)],
    ) -> anyhow::Result<()> {
        let opened = events
            .iter()
            .map(|(event, _)| opened(event))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let tickets: Vec<entitlement::Ticket> = opened.iter().map(|o| o.ticket).collect();
        let resolutions = entitlement::resolve(conn, &self.country_code, &tickets).await?;
        let out: Vec<EventEnvelope> = opened
            .iter()
            .zip(&resolutions)
            .zip(events)
            .map(|((o, resolution), (_, span))| {
                span.in_scope(|| resolved(o.id, o.version, resolution))
            })
            .collect();
        outbox::enqueue(conn, &out).await
    }

    /// One `ticket.created` per ticket: nothing to order.
    fn ordered(&self, _event: &EventEnvelope) -> bool {
        false
    }

    /// Reads and outbox rows: all in the transaction.
    fn batched(&self) -> bool {
        true
    }

    /// Batches are resolved whole (a handful of statements for up to 32
    /// tickets): one lane, whose batches grow with the load, costs the
    /// fleet least (measured: four lanes of smaller batches took a tenth
    /// more of the two cores).
    fn lanes(&self) -> usize {
        1
    }
}

/// A new ticket as its `ticket.created` tells it.
struct Opened<'a> {
    id: Uuid,
    version: i64,
    ticket: entitlement::Ticket<'a>,
}

fn opened(event: &EventEnvelope) -> anyhow::Result<Opened<'_>> {
    let Some(Payload::TicketCreated(created)) = &event.payload else {
        anyhow::bail!("{} is not a ticket.created", event.r#type);
    };
    let ticket = created
        .ticket
        .as_ref()
        .context("ticket.created without its ticket")?;
    Ok(Opened {
        id: Uuid::parse_str(&ticket.id).context("the ticket id is not a UUID")?,
        version: ticket.version,
        ticket: entitlement::Ticket {
            contact: &ticket.contact,
            subject: &ticket.subject,
            body: created
                .first_article
                .as_ref()
                .map_or("", |article| article.body.as_str()),
            opened_at: ticket
                .created_at
                .as_ref()
                .or(event.occurred_at.as_ref())
                .and_then(from_timestamp)
                .unwrap_or_else(Utc::now),
        },
    })
}

fn day(date: Option<NaiveDate>) -> String {
    date.map(|d| d.to_string()).unwrap_or_default()
}

fn coverage(coverage: Coverage) -> pb::Coverage {
    match coverage {
        Coverage::None => pb::Coverage::None,
        Coverage::Warranty => pb::Coverage::Warranty,
        Coverage::Contract => pb::Coverage::Contract,
    }
}

fn customer(id: Uuid, name: &str) -> ev::CustomerRef {
    ev::CustomerRef {
        id: id.to_string(),
        name: name.to_owned(),
    }
}

fn project_ref(id: Uuid, name: &str) -> ev::ProjectRef {
    ev::ProjectRef {
        id: id.to_string(),
        name: name.to_owned(),
    }
}

fn asset_ref(asset: &Asset) -> ev::AssetRef {
    ev::AssetRef {
        id: asset.id.to_string(),
        serial: asset.serial.clone(),
        model: asset.model.clone(),
        family: asset.family.clone(),
    }
}

fn warranty_until(accepted_on: NaiveDate, months: i32) -> String {
    day(domain::warranty_until(
        accepted_on,
        u32::try_from(months).unwrap_or(domain::DEFAULT_WARRANTY_MONTHS),
    ))
}

/// `entitlement.resolved` for ticket `ticket_id` at `version` (as opened).
pub fn resolved(ticket_id: Uuid, version: i64, resolution: &Resolution) -> EventEnvelope {
    envelope(
        "entitlement.resolved",
        Some((ticket_id, version)),
        Utc::now(),
        Payload::EntitlementResolved(ev::EntitlementResolved {
            ticket_id: ticket_id.to_string(),
            r#match: match resolution.matched {
                Match::Found => pb::Match::Found,
                Match::Unknown => pb::Match::Unknown,
                Match::Ambiguous => pb::Match::Ambiguous,
            } as i32,
            customer: resolution
                .customer
                .as_ref()
                .map(|(id, name)| customer(*id, name)),
            branch: resolution
                .branch
                .as_ref()
                .map(|(id, name, region)| ev::BranchRef {
                    id: id.to_string(),
                    name: name.clone(),
                    region: region.clone(),
                }),
            project: resolution
                .project
                .as_ref()
                .map(|(id, name)| project_ref(*id, name)),
            asset: resolution.asset.as_ref().map(asset_ref),
            coverage: coverage(resolution.coverage) as i32,
            covered_until: day(resolution.covered_until),
            reason: resolution.reason.clone(),
            candidates: resolution
                .candidates
                .iter()
                .map(|c| pb::Candidate {
                    customer_id: c.customer_id.to_string(),
                    customer: c.customer.clone(),
                    via: c.via.clone(),
                })
                .collect(),
            serials: resolution.serials.clone(),
        }),
    )
}

/// `project.added`.
pub fn project_added(project: &Project, branch: &Branch) -> EventEnvelope {
    envelope(
        "project.added",
        None,
        Utc::now(),
        Payload::ProjectAdded(ev::ProjectAdded {
            customer: Some(customer(project.customer_id, &project.customer)),
            branch: Some(ev::BranchRef {
                id: branch.id.to_string(),
                name: branch.name.clone(),
                region: branch.region.clone(),
            }),
            project: Some(project_ref(project.id, &project.name)),
            accepted_on: project.accepted_on.to_string(),
            warranty_until: warranty_until(project.accepted_on, project.warranty_months),
            time_zone: project.time_zone.clone(),
        }),
    )
}

/// `project.accepted`: the acceptance date moved from `before`'s to `after`'s.
pub fn project_accepted(before: &Project, after: &Project) -> EventEnvelope {
    envelope(
        "project.accepted",
        None,
        Utc::now(),
        Payload::ProjectAccepted(ev::ProjectAccepted {
            customer: Some(customer(after.customer_id, &after.customer)),
            project: Some(project_ref(after.id, &after.name)),
            accepted_on: after.accepted_on.to_string(),
            previous_accepted_on: before.accepted_on.to_string(),
            warranty_until: warranty_until(after.accepted_on, after.warranty_months),
            previous_warranty_until: warranty_until(before.accepted_on, before.warranty_months),
        }),
    )
}

/// `asset.added`.
pub fn asset_added(asset: &Asset) -> EventEnvelope {
    envelope(
        "asset.added",
        None,
        Utc::now(),
        Payload::AssetAdded(ev::AssetAdded {
            customer: Some(customer(asset.customer_id, &asset.customer)),
            project: Some(project_ref(asset.project_id, &asset.project)),
            asset: Some(asset_ref(asset)),
            firmware: asset.firmware.clone(),
            warranty_until: warranty_until(asset.accepted_on, asset.warranty_months),
        }),
    )
}

/// `contract.created`.
pub fn contract_created(contract: &Contract) -> EventEnvelope {
    envelope(
        "contract.created",
        None,
        Utc::now(),
        Payload::ContractCreated(ev::ContractCreated {
            contract_id: contract.id.to_string(),
            customer: Some(customer(contract.customer_id, &contract.customer)),
            start: contract.starts_on.to_string(),
            end: contract.ends_on.to_string(),
            fee: Amount(contract.fee_cents).to_string(),
            currency: contract.currency.clone(),
            serials: contract.serials.clone(),
        }),
    )
}

/// `contract.coverage_changed`: `contract` as it stands after the change.
pub fn coverage_changed(
    contract: &Contract,
    added: Vec<String>,
    removed: Vec<String>,
) -> EventEnvelope {
    envelope(
        "contract.coverage_changed",
        None,
        Utc::now(),
        Payload::ContractCoverageChanged(ev::ContractCoverageChanged {
            contract_id: contract.id.to_string(),
            customer: Some(customer(contract.customer_id, &contract.customer)),
            start: contract.starts_on.to_string(),
            end: contract.ends_on.to_string(),
            added,
            removed,
            serials: contract.serials.clone(),
        }),
    )
}
