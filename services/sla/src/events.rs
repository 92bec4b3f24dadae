//! Events in and out of `sla`: the ticket events that move clocks, the
//! acknowledgements that stop ladders, and the `sla.*` facts it publishes.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use chrono::{DateTime, Utc};
use hotline_kit::{
    bus::{
        consumer::EventHandler,
        outbox::{self, envelope},
    },
    telemetry::TraceContext,
    time::{from_timestamp, timestamp},
};
use hotline_proto::{
    events::v1::{self as ev, EventEnvelope, event_envelope::Payload},
    tickets::v1::{Status, Ticket},
};
use sqlx::PgConnection;
use tracing::Instrument;
use uuid::Uuid;

use crate::{
    domain::{Clock, Effect, TicketView},
    index::DueIndex,
    store::{self, Targets},
};

/// The breach a clock stands in.
pub fn breach(clock: &Clock) -> ev::Breach {
    ev::Breach {
        ticket_id: clock.ticket_id.to_string(),
        number: clock.number.clone(),
        subject: clock.subject.clone(),
        contact: clock.contact.clone(),
        channel: clock.channel,
        priority: clock.priority,
        awaiting_since: clock.awaiting_since.map(timestamp),
        due: clock.due.map(timestamp),
        breach: clock.breaches,
    }
}

/// The `sla.*` events of `effects` on `clock` (as it stands after them).
/// `cleared` events describe the wait that ended, `before`.
pub fn published(clock: &Clock, before: &Clock, effects: &[Effect]) -> Vec<EventEnvelope> {
    let subject = Some((clock.ticket_id, clock.ticket_version));
    effects
        .iter()
        .map(|effect| match effect {
            Effect::Breached { at } => envelope(
                "sla.breached",
                subject,
                *at,
                Payload::SlaBreached(ev::SlaBreached {
                    breach: Some(breach(clock)),
                    breached_at: Some(timestamp(*at)),
                }),
            ),
            Effect::Escalated { level, step, at } => envelope(
                "sla.escalated",
                subject,
                *at,
                Payload::SlaEscalated(ev::SlaEscalated {
                    breach: Some(breach(clock)),
                    level: *level,
                    step: *step,
                    escalated_at: Some(timestamp(*at)),
                }),
            ),
            Effect::Cleared { at, reason } => {
                let mut ended = breach(before);
                ended.breach = before.breaches;
                envelope(
                    "sla.cleared",
                    subject,
                    *at,
                    Payload::SlaCleared(ev::SlaCleared {
                        breach: Some(ended),
                        cleared_at: Some(timestamp(*at)),
                        reason: (*reason).to_owned(),
                    }),
                )
            }
        })
        .collect()
}

/// What a ticket event says about its ticket.
fn view_of(event: &EventEnvelope) -> Option<TicketView> {
    let ticket: &Ticket = match event.payload.as_ref()? {
        Payload::TicketCreated(e) => e.ticket.as_ref(),
        Payload::TicketArticleAdded(e) => e.ticket.as_ref(),
        Payload::TicketAwaitingResponse(e) => e.ticket.as_ref(),
        Payload::TicketResponded(e) => e.ticket.as_ref(),
        Payload::TicketAssigned(e) => e.ticket.as_ref(),
        Payload::TicketStatusChanged(e) => e.ticket.as_ref(),
        Payload::TicketResolved(e) => e.ticket.as_ref(),
        Payload::TicketClosed(e) => e.ticket.as_ref(),
        Payload::TicketReopened(e) => e.ticket.as_ref(),
        Payload::TicketPriorityChanged(e) => e.ticket.as_ref(),
        _ => None,
    }?;
    let awaiting_since = if ticket.awaiting_response {
        ticket.awaiting_since.as_ref().and_then(from_timestamp)
    } else {
        None
    };
    Some(TicketView {
        version: ticket.version,
        number: ticket.number.clone(),
        subject: ticket.subject.clone(),
        contact: ticket.contact.clone(),
        channel: ticket.channel,
        priority: ticket.priority,
        awaiting_since,
        end_reason: match Status::try_from(ticket.status) {
            Ok(Status::Resolved) => "resolved",
            Ok(Status::Closed) => "closed",
            _ => "responded",
        },
    })
}

/// Whether `event` is one the clock reads (`CONSUMES`). A queue declared
/// by an earlier version is still bound to every `ticket.*`: what it
/// brings besides is acknowledged without touching the clock.
fn read_by_clock(event: &EventEnvelope) -> bool {
    crate::CONSUMES.contains(&event.r#type.as_str())
}

/// Applies ticket events and acknowledgements to clocks.
pub struct Handler {
    pub index: Arc<DueIndex>,
    /// The warranty target, for priorities without a policy.
    pub warranty: Duration,
}

impl Handler {
    /// Applies one event, with the response targets read for its batch.
    async fn apply(
        &self,
        conn: &mut PgConnection,
        event: &EventEnvelope,
        targets: &Targets,
    ) -> anyhow::Result<()> {
        if !read_by_clock(event) {
            return Ok(());
        }
        let ticket_id = Uuid::parse_str(&event.ticket_id).context("event without a ticket id")?;
        let at = event
            .occurred_at
            .as_ref()
            .and_then(from_timestamp)
            .unwrap_or_else(Utc::now);
        if let Some(Payload::PageAcknowledged(ack)) = &event.payload {
            return self.acknowledge(conn, ticket_id, ack, at).await;
        }
        let view = view_of(event).with_context(|| format!("{} carries no ticket", event.r#type))?;
        let mut clock = store::lock(conn, ticket_id)
            .await?
            .unwrap_or_else(|| Clock::new(ticket_id, &view));
        let before = clock.clone();
        let target = targets.of(view.priority);
        let effects = clock.observe(&view, target, at);
        if clock.awaiting_since != before.awaiting_since {
            if before.awaiting_since.is_some() {
                // The response that ends a wait links to the trace that
                // started it (and paged, if it breached).
                before.trace.link(&tracing::Span::current());
            }
            if clock.awaiting_since.is_some() {
                // A new wait: its breach will continue this event's trace.
                clock.trace = TraceContext::current();
            }
        }
        store::save(conn, &clock).await?;
        outbox::enqueue(conn, &published(&clock, &before, &effects)).await?;
        if clock.next_at != before.next_at {
            self.index.set(ticket_id, clock.next_at).await;
        }
        Ok(())
    }
}

impl EventHandler for Handler {
    async fn handle(&self, conn: &mut PgConnection, event: &EventEnvelope) -> anyhow::Result<()> {
        let targets = Targets::read(conn, self.warranty).await?;
        self.apply(conn, event, &targets).await
    }

    /// The policies are read once for the events that waited together (in
    /// their transaction, so a policy set meanwhile counts from the next
    /// batch); each event is then applied in its own span.
    async fn handle_batch(
        &self,
        conn: &mut PgConnection,
        events: &[(&EventEnvelope, tracing::Span)],
    ) -> anyhow::Result<()> {
        let targets = Targets::read(conn, self.warranty).await?;
        for (event, span) in events {
            self.apply(conn, event, &targets)
                .instrument(span.clone())
                .await?;
        }
        Ok(())
    }

    /// Acknowledgements are not ticket facts: each one counts, whatever the
    /// ticket's version. Events that change no clock are not kept as the
    /// ticket's version either: the next one that does is applied.
    fn ordered(&self, event: &EventEnvelope) -> bool {
        !event.r#type.starts_with("page.") && read_by_clock(event)
    }

    /// A clock follows the ticket's snapshot, whatever the event's type.
    fn snapshots(&self) -> bool {
        true
    }

    /// Clocks live in the transaction. The due-index entry set for an event
    /// whose batch then rolled back is set again when the event is applied
    /// on its own; until then an entry too early only wakes the scheduler
    /// to find nothing due, and a clock whose entry is too late is found by
    /// the scheduler's safety net, which reads PostgreSQL (as after a
    /// commit that fails on its own).
    fn batched(&self) -> bool {
        true
    }

    /// Four lanes: measured with the whole fleet creating tickets as fast
    /// as it can, sixteen lanes of small batches cost the most commits,
    /// one lane fell behind (its statements are per event), four kept up
    /// at the best rate.
    fn lanes(&self) -> usize {
        4
    }
}

impl Handler {
    async fn acknowledge(
        &self,
        conn: &mut PgConnection,
        ticket_id: Uuid,
        ack: &ev::PageAcknowledged,
        at: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        let Some(mut clock) = store::lock(conn, ticket_id).await? else {
            return Ok(());
        };
        // A late acknowledgement of an earlier breach, or of one already
        // cleared, changes nothing.
        if clock.breaches != ack.breach {
            return Ok(());
        }
        if clock.acknowledge(&ack.acknowledged_by, at) == Ok(true) {
            store::save(conn, &clock).await?;
            self.index.set(ticket_id, clock.next_at).await;
        }
        Ok(())
    }
}
