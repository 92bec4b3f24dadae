//! Events in and out of `tickets`: the `ticket.*` events a change
//! produces — every event of one change carries the ticket as it stands
//! after it, and the same version — and `entitlement.resolved` from
//! `contracts`, recorded on its ticket ([`Entitlements`]).

use anyhow::Context;
use chrono::{DateTime, NaiveDate, Utc};
use hotline_kit::{
    bus::{consumer::EventHandler, outbox::envelope},
    time::{from_timestamp, timestamp},
};
use hotline_proto::{
    contracts::v1::Coverage as WireCoverage,
    events::v1::{self as ev, EventEnvelope, event_envelope::Payload},
};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{
    convert,
    domain::{Change, Coverage, Entitlement, Status},
    store::{self, Article, Resolved, Ticket},
};

fn event(ticket: &Ticket, event_type: &str, at: DateTime<Utc>, payload: Payload) -> EventEnvelope {
    envelope(event_type, Some((ticket.id, ticket.version)), at, payload)
}

/// `ticket.created`, and `ticket.awaiting_response` if it awaits one.
pub fn created(ticket: &Ticket, first: &Article) -> Vec<EventEnvelope> {
    let snapshot = convert::ticket(ticket);
    let mut events = vec![event(
        ticket,
        "ticket.created",
        ticket.created_at,
        Payload::TicketCreated(ev::TicketCreated {
            ticket: Some(snapshot.clone()),
            first_article: Some(convert::article(first)),
        }),
    )];
    if let Some(since) = ticket.awaiting_since {
        events.push(event(
            ticket,
            "ticket.awaiting_response",
            ticket.created_at,
            Payload::TicketAwaitingResponse(ev::AwaitingResponse {
                ticket: Some(snapshot),
                awaiting_since: Some(timestamp(since)),
            }),
        ));
    }
    events
}

/// The events of a change to an existing ticket, in the order they happened.
pub fn changed(
    before: &Ticket,
    after: &Ticket,
    change: &Change,
    article: Option<&Article>,
    at: DateTime<Utc>,
) -> Vec<EventEnvelope> {
    let snapshot = || Some(convert::ticket(after));
    let mut events = Vec::new();
    let mut push =
        |event_type: &str, payload: Payload| events.push(event(after, event_type, at, payload));
    if let Some(article) = article {
        push(
            "ticket.article_added",
            Payload::TicketArticleAdded(ev::ArticleAdded {
                ticket: snapshot(),
                article: Some(convert::article(article)),
            }),
        );
    }
    if change.status_changed() {
        push(
            "ticket.status_changed",
            Payload::TicketStatusChanged(ev::StatusChanged {
                ticket: snapshot(),
                previous: convert::status(before.status) as i32,
            }),
        );
        match after.status {
            Status::Resolved => push(
                "ticket.resolved",
                Payload::TicketResolved(ev::TicketResolved { ticket: snapshot() }),
            ),
            Status::Closed => push(
                "ticket.closed",
                Payload::TicketClosed(ev::TicketClosed { ticket: snapshot() }),
            ),
            _ if change.reopened() => push(
                "ticket.reopened",
                Payload::TicketReopened(ev::TicketReopened { ticket: snapshot() }),
            ),
            _ => {}
        }
    }
    if change.started_awaiting() {
        push(
            "ticket.awaiting_response",
            Payload::TicketAwaitingResponse(ev::AwaitingResponse {
                ticket: snapshot(),
                awaiting_since: after.awaiting_since.map(timestamp),
            }),
        );
    }
    if change.responded() {
        push(
            "ticket.responded",
            Payload::TicketResponded(ev::Responded {
                ticket: snapshot(),
                responded_at: Some(timestamp(at)),
                article_id: article.map(|a| a.id.to_string()).unwrap_or_default(),
            }),
        );
    }
    if before.assignee != after.assignee {
        push(
            "ticket.assigned",
            Payload::TicketAssigned(ev::Assigned {
                ticket: snapshot(),
                previous_assignee: before.assignee.clone().unwrap_or_default(),
            }),
        );
    }
    if before.priority != after.priority {
        push(
            "ticket.priority_changed",
            Payload::TicketPriorityChanged(ev::PriorityChanged {
                ticket: snapshot(),
                previous: convert::priority(before.priority) as i32,
            }),
        );
    }
    events
}

/// `ticket.entitled`: the ticket with the entitlement it now records.
pub fn entitled(ticket: &Ticket, at: DateTime<Utc>) -> EventEnvelope {
    event(
        ticket,
        "ticket.entitled",
        at,
        Payload::TicketEntitled(ev::TicketEntitled {
            ticket: Some(convert::ticket(ticket)),
        }),
    )
}

/// Records `contracts`' `entitlement.resolved` on its ticket: a new
/// version and `ticket.entitled`, in the consumer's transaction.
pub struct Entitlements;

impl EventHandler for Entitlements {
    async fn handle(&self, conn: &mut PgConnection, event: &EventEnvelope) -> anyhow::Result<()> {
        self.handle_batch(conn, &[(event, tracing::Span::current())])
            .await
    }

    async fn handle_batch(
        &self,
        conn: &mut PgConnection,
        events: &[(&EventEnvelope, tracing::Span)],
    ) -> anyhow::Result<()> {
        let resolved = events
            .iter()
            .map(|(event, span)| resolution(event, span.clone()))
            .collect::<anyhow::Result<Vec<_>>>()?;
        store::entitle(conn, &resolved).await?;
        Ok(())
    }

    /// Each resolution stands on its own; of two for one ticket the later
    /// (by when it was resolved) counts, whatever the ticket's version.
    fn ordered(&self, _event: &EventEnvelope) -> bool {
        false
    }

    /// Every effect is in the transaction.
    fn batched(&self) -> bool {
        true
    }

    /// Batches are applied whole (one statement): one lane, whose batches
    /// grow with the load, commits least often.
    fn lanes(&self) -> usize {
        1
    }
}

/// What an `entitlement.resolved` says, checked.
fn resolution(event: &EventEnvelope, span: tracing::Span) -> anyhow::Result<Resolved> {
    let Some(Payload::EntitlementResolved(resolved)) = &event.payload else {
        anyhow::bail!("{} is not an entitlement.resolved", event.r#type);
    };
    let ticket_id = Uuid::parse_str(&resolved.ticket_id).context("the ticket id is not a UUID")?;
    let named = |id: &str, name: &str, what: &str| -> anyhow::Result<Option<(Uuid, String)>> {
        if id.is_empty() {
            return Ok(None);
        }
        let id = Uuid::parse_str(id).with_context(|| format!("the {what} id is not a UUID"))?;
        Ok(Some((id, name.to_owned())))
    };
    let customer = match &resolved.customer {
        Some(c) => named(&c.id, &c.name, "customer")?,
        None => None,
    };
    let project = match &resolved.project {
        Some(p) => named(&p.id, &p.name, "project")?,
        None => None,
    };
    let coverage = match WireCoverage::try_from(resolved.coverage) {
        Ok(WireCoverage::None) => Coverage::None,
        Ok(WireCoverage::Warranty) => Coverage::Warranty,
        Ok(WireCoverage::Contract) => Coverage::Contract,
        _ => anyhow::bail!("entitlement.resolved without a coverage"),
    };
    let covered_until = match resolved.covered_until.as_str() {
        "" => None,
        day => Some(
            NaiveDate::parse_from_str(day, "%Y-%m-%d")
                .with_context(|| format!("covered_until {day:?} is not a day"))?,
        ),
    };
    Ok(Resolved {
        ticket_id,
        entitlement: Entitlement {
            customer,
            project,
            asset: resolved
                .asset
                .as_ref()
                .map(|a| a.serial.clone())
                .filter(|s| !s.is_empty()),
            coverage,
            covered_until,
            reason: resolved.reason.clone(),
        },
        resolved_at: event
            .occurred_at
            .as_ref()
            .and_then(from_timestamp)
            .unwrap_or_else(Utc::now),
        span,
    })
}
