//! Escalations in, pages queued; clears in, pages resolved; the
//! directory's people in, kept as the people paged; and the
//! acknowledgement, from any edge, out as `page.acknowledged`.

use std::sync::Arc;

use anyhow::Context;
use chrono::{DateTime, Utc};
use hotline_kit::{
    bus::{
        consumer::EventHandler,
        outbox::{self, OutboxSignal, envelope},
    },
    time::{from_timestamp, timestamp},
};
use hotline_proto::{
    dispatch::v1 as dispatch,
    events::v1::{self as ev, EventEnvelope, event_envelope::Payload},
};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::{
    PagerConfig, messages,
    people::{self, Contact},
    store::{self, Breach, NewDelivery, Target},
};

pub struct Handler {
    pub config: Arc<PagerConfig>,
}

impl EventHandler for Handler {
    async fn handle(&self, conn: &mut PgConnection, event: &EventEnvelope) -> anyhow::Result<()> {
        if let Some(
            Payload::PersonAdded(ev::PersonAdded { person })
            | Payload::PersonUpdated(ev::PersonUpdated { person })
            | Payload::PersonDeactivated(ev::PersonDeactivated { person }),
        ) = &event.payload
        {
            return keep_person(
                conn,
                person.as_ref().context("a person event without a person")?,
            )
            .await;
        }
        let ticket_id = Uuid::parse_str(&event.ticket_id).context("event without a ticket id")?;
        match &event.payload {
            Some(Payload::SlaEscalated(escalated)) => {
                let breach = escalated
                    .breach
                    .as_ref()
                    .context("escalation without breach")?;
                let at = escalated
                    .escalated_at
                    .as_ref()
                    .and_then(from_timestamp)
                    .unwrap_or_else(Utc::now);
                self.escalated(conn, ticket_id, breach, escalated, at).await
            }
            Some(Payload::SlaCleared(cleared)) => {
                let breach = cleared.breach.as_ref().context("clear without breach")?;
                let at = cleared
                    .cleared_at
                    .as_ref()
                    .and_then(from_timestamp)
                    .unwrap_or_else(Utc::now);
                self.cleared(conn, ticket_id, breach.breach, at, &cleared.reason)
                    .await
            }
            _ => Ok(()),
        }
    }

    /// Pages are queued in the transaction, sent only after it commits.
    fn batched(&self) -> bool {
        true
    }
}

impl Handler {
    async fn escalated(
        &self,
        conn: &mut PgConnection,
        ticket_id: Uuid,
        breach: &ev::Breach,
        escalated: &ev::SlaEscalated,
        at: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        let level = escalated.level;
        let row = store::upsert_breach(conn, ticket_id, breach, level).await?;
        if row.cleared_at.is_some() {
            return Ok(()); // answered already: never a page after that
        }
        if let Some(by) = &row.acknowledged_by {
            // The step fired before the sla heard of the acknowledgement:
            // someone has it, nobody else is woken.
            tracing::info!(
                ticket = %row.number, level, acknowledged_by = %by,
                "escalation after the acknowledgement: nobody paged"
            );
            return Ok(());
        }
        let key = messages::dedup_key(ticket_id, row.breach);
        let page =
            |channel: &'static str, target: &str, destination: &str, body: String| NewDelivery {
                ticket_id,
                breach: row.breach,
                step: escalated.step,
                level,
                action: "trigger",
                channel,
                target: target.to_owned(),
                destination: destination.to_owned(),
                dedup_key: key.clone(),
                body,
                escalated_at: Some(at),
            };
        let mut deliveries = Vec::new();
        if !self.config.pagerduty_routing_key.is_empty() {
            let body = messages::pagerduty_trigger(&row, level, &self.config.source);
            deliveries.push(page("pagerduty", "pagerduty", "", body.to_string()));
        }
        if !self.config.webhook_url.is_empty() {
            let body = messages::webhook("escalated", &row, level, escalated.step);
            deliveries.push(page(
                "webhook",
                "webhook",
                &self.config.webhook_url,
                body.to_string(),
            ));
        }
        let email = !self.config.smtp_relay.is_empty();
        let (people, unreachable) = people_for(conn, level, at, email).await?;
        for person in &people {
            if !person.webhook_url.is_empty() {
                let body = messages::webhook("escalated", &row, level, escalated.step);
                deliveries.push(page(
                    "webhook",
                    &person.target,
                    &person.webhook_url,
                    body.to_string(),
                ));
            }
            if email && !person.email.is_empty() {
                let body = messages::email("escalated", &row, level);
                deliveries.push(page(
                    "email",
                    &person.target,
                    &person.email,
                    body.to_string(),
                ));
            }
        }
        let mut failures: Vec<(String, String)> = unreachable;
        if deliveries.is_empty() && failures.is_empty() {
            failures.push((
                String::new(),
                format!("nobody is configured to be paged at level {level}"),
            ));
        }
        store::queue(conn, &deliveries).await?;
        let failed: Vec<EventEnvelope> = failures
            .into_iter()
            .map(|(target, reason)| {
                tracing::error!(
                    ticket = %row.number, level, %target, %reason,
                    "an escalation level reaches nobody"
                );
                metrics::counter!("hotline_pages_unroutable_total").increment(1);
                page_failed(&row, level, &target, &reason, at)
            })
            .collect();
        outbox::enqueue(conn, &failed).await
    }

    async fn cleared(
        &self,
        conn: &mut PgConnection,
        ticket_id: Uuid,
        breach: i32,
        at: DateTime<Utc>,
        reason: &str,
    ) -> anyhow::Result<()> {
        if !store::clear(conn, ticket_id, breach, at, reason).await? {
            return Ok(());
        }
        store::cancel_triggers(conn, ticket_id, breach).await?;
        let Some(row) = store::breach(conn, ticket_id, breach).await? else {
            return Ok(());
        };
        let resolves = followups(conn, &row, "resolve", "cleared").await?;
        store::queue(conn, &resolves).await?;
        Ok(())
    }
}

/// The directory, read over gRPC as the pager.
pub type Directory = dispatch::dispatch_service_client::DispatchServiceClient<
    tonic::service::interceptor::InterceptedService<
        tonic::transport::Channel,
        hotline_kit::grpc::ServiceToken,
    >,
>;

/// How long the directory is waited for between two tries.
const SYNC_RETRY: std::time::Duration = std::time::Duration::from_secs(5);

/// Reads the whole directory once, at start, into the copies (the newest
/// `updated_at` still wins over events): people added before the pager's
/// queue was bound to `person.*`, or while it was away, are known without
/// being typed again. Tries again until it succeeds, then waits for
/// `cancel`.
pub async fn sync_directory(
    pool: PgPool,
    mut directory: Directory,
    cancel: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    let mut tries = 0u32;
    loop {
        match sync_once(&pool, &mut directory).await {
            Ok(count) => {
                tracing::info!(count, "the directory's people read");
                break;
            }
            Err(error) => {
                tries += 1;
                // Quiet while dispatch starts alongside; loud if it stays away.
                if tries % 12 == 1 {
                    tracing::warn!(
                        error = format!("{error:#}"),
                        tries,
                        "cannot read the directory yet; trying again"
                    );
                }
            }
        }
        tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            () = tokio::time::sleep(SYNC_RETRY) => {}
        }
    }
    cancel.cancelled().await;
    Ok(())
}

async fn sync_once(pool: &PgPool, directory: &mut Directory) -> anyhow::Result<usize> {
    let people = directory
        .list_people(dispatch::ListPeopleRequest {
            include_inactive: true,
            limit: 10_000,
            ..Default::default()
        })
        .await?
        .into_inner()
        .people;
    let mut tx = pool.begin().await?;
    for person in &people {
        keep_person(&mut tx, person).await?;
    }
    tx.commit().await?;
    Ok(people.len())
}

/// Keeps the pager's copy of a directory person. A new email is followed
/// by whatever named the old one, and legacy people with it are theirs now.
async fn keep_person(conn: &mut PgConnection, person: &dispatch::Person) -> anyhow::Result<()> {
    let copy = people::Person {
        id: Uuid::parse_str(&person.id).context("a person id is not a UUID")?,
        name: person.name.clone(),
        email: person.email.clone(),
        phone: person.phone.clone(),
        active: person.active,
        webhook_url: String::new(),
    };
    let updated_at = person
        .updated_at
        .as_ref()
        .and_then(from_timestamp)
        .context("a person without updated_at")?;
    let Some(before) = store::keep_person(conn, &copy, updated_at).await? else {
        return Ok(()); // a newer copy is kept already
    };
    if let Some(old) = before.filter(|old| *old != copy.email) {
        store::rename(conn, &old, &copy.email).await?;
    }
    let adopted = store::adopt_legacy(conn, &copy).await?;
    if !adopted.is_empty() {
        tracing::info!(email = %copy.email, ?adopted, "legacy pager people adopted by the directory");
    }
    Ok(())
}

/// The same targets the breach's triggers reached, told `action`.
async fn followups(
    conn: &mut PgConnection,
    breach: &Breach,
    action: &'static str,
    webhook_event: &str,
) -> anyhow::Result<Vec<NewDelivery>> {
    let reached = store::reached(conn, breach.ticket_id, breach.breach).await?;
    Ok(reached
        .into_iter()
        .map(|r| {
            let (channel, body) = match r.channel.as_str() {
                "pagerduty" => (
                    "pagerduty",
                    messages::pagerduty_followup(action, &r.dedup_key),
                ),
                "email" => (
                    "email",
                    messages::email(webhook_event, breach, breach.level),
                ),
                _ => (
                    "webhook",
                    messages::webhook(webhook_event, breach, breach.level, 0),
                ),
            };
            NewDelivery {
                ticket_id: breach.ticket_id,
                breach: breach.breach,
                step: 0,
                level: breach.level,
                action,
                channel,
                target: r.target,
                destination: r.destination,
                dedup_key: r.dedup_key,
                body: body.to_string(),
                escalated_at: None,
            }
        })
        .collect())
}

/// How the people `level` pages at `at` are reached (those with a working
/// contact method: a webhook, or an email address when `email` pages can
/// be sent), and the targets that reach nobody, with why. A schedule whose
/// turn is a deactivated person's reaches nobody: the level's other
/// targets are paged, and the failure says who.
async fn people_for(
    conn: &mut PgConnection,
    level: i32,
    at: DateTime<Utc>,
    email: bool,
) -> anyhow::Result<(Vec<Contact>, Vec<(String, String)>)> {
    let map = store::level_targets(conn).await?;
    // A level without its own targets uses the nearest level below it.
    let Some(chosen) = map.iter().map(|(l, _)| *l).filter(|l| *l <= level).max() else {
        return Ok((Vec::new(), Vec::new()));
    };
    let directory = store::directory(conn).await?;
    let schedules = store::schedules(conn).await?;
    let mut reached: Vec<Contact> = Vec::new();
    let mut unreachable = Vec::new();
    for (_, target) in map.iter().filter(|(l, _)| *l == chosen) {
        let (label, name) = match target {
            Target::Person(name) => (format!("person {name}"), Some(name.clone())),
            Target::Schedule(schedule) => {
                let on_call = schedules
                    .iter()
                    .find(|s| s.name == *schedule)
                    .and_then(|s| s.rotation.on_call(&s.overrides, at))
                    .map(|o| o.person);
                (format!("schedule {schedule}"), on_call)
            }
        };
        let Some(name) = name else {
            unreachable.push((label, "nobody is on call".to_owned()));
            continue;
        };
        match directory.contact(&name) {
            Ok(contact)
                if !contact.webhook_url.is_empty() || (email && !contact.email.is_empty()) =>
            {
                if !reached.iter().any(|p| p.target == contact.target) {
                    reached.push(contact);
                }
            }
            Ok(contact) => unreachable.push((
                label,
                if email {
                    format!(
                        "{} has no working contact method (neither webhook nor email)",
                        contact.target
                    )
                } else {
                    format!(
                        "{} has no working contact method (a webhook URL, or an email address with pager.smtp_relay set)",
                        contact.target
                    )
                },
            )),
            Err(why) => unreachable.push((label, why)),
        }
    }
    Ok((reached, unreachable))
}

fn page_failed(
    breach: &Breach,
    level: i32,
    target: &str,
    reason: &str,
    at: DateTime<Utc>,
) -> EventEnvelope {
    envelope(
        "page.failed",
        None,
        at,
        Payload::PageFailed(ev::PageFailed {
            ticket_id: breach.ticket_id.to_string(),
            breach: breach.breach,
            level,
            target: target.to_owned(),
            reason: reason.to_owned(),
        }),
    )
}

/// Why an acknowledgement was refused.
#[derive(Debug, thiserror::Error)]
pub enum AckError {
    #[error("{0} has no breach to acknowledge")]
    NoBreach(String),
    #[error("{0} was already answered: its breach is cleared")]
    Cleared(String),
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

/// What an acknowledgement did.
pub struct Acknowledged {
    pub breach: Breach,
    pub first: bool,
}

/// Acknowledges the latest breach of `ticket` (id or number; only breach
/// `only` when given, else it is over): records it,
/// publishes `page.acknowledged` (the sla stops the ladder), and tells the
/// targets already paged — except PagerDuty when the acknowledgement came
/// from there.
pub async fn acknowledge(
    pool: &PgPool,
    ticket: &str,
    only: Option<i32>,
    by: &str,
    via: &str,
    relay: &OutboxSignal,
) -> Result<Acknowledged, AckError> {
    let at = Utc::now();
    let mut tx = pool.begin().await.map_err(anyhow::Error::from)?;
    let mut breach = store::latest_breach(&mut tx, ticket)
        .await
        .map_err(anyhow::Error::from)?
        .ok_or_else(|| AckError::NoBreach(ticket.to_owned()))?;
    if breach.cleared_at.is_some() || only.is_some_and(|only| only != breach.breach) {
        return Err(AckError::Cleared(breach.number));
    }
    let first = store::acknowledge(&mut tx, breach.ticket_id, breach.breach, by, via, at)
        .await
        .map_err(anyhow::Error::from)?;
    if first {
        breach.acknowledged_at = Some(at);
        breach.acknowledged_by = Some(by.to_owned());
        let event = envelope(
            "page.acknowledged",
            Some((breach.ticket_id, 0)),
            at,
            Payload::PageAcknowledged(ev::PageAcknowledged {
                ticket_id: breach.ticket_id.to_string(),
                breach: breach.breach,
                acknowledged_by: by.to_owned(),
                via: via.to_owned(),
                acknowledged_at: Some(timestamp(at)),
            }),
        );
        outbox::enqueue(&mut tx, &[event]).await?;
        // Everyone a trigger was tried on hears of it; pages no one was
        // sent yet are cancelled, and one being retried is cancelled when
        // its turn comes.
        let mut told = followups(&mut tx, &breach, "acknowledge", "acknowledged").await?;
        if via == "pagerduty" {
            told.retain(|d| d.channel != "pagerduty");
        }
        store::cancel_triggers(&mut tx, breach.ticket_id, breach.breach)
            .await
            .map_err(anyhow::Error::from)?;
        store::queue(&mut tx, &told)
            .await
            .map_err(anyhow::Error::from)?;
    }
    tx.commit().await.map_err(anyhow::Error::from)?;
    if first {
        relay.committed();
    }
    Ok(Acknowledged { breach, first })
}
