//! The `ticket.*` events a change produces. Every event of one change
//! carries the ticket as it stands after it, and the same version.

use chrono::{DateTime, Utc};
use hotline_kit::{bus::outbox::envelope, time::timestamp};
use hotline_proto::events::v1::{self as ev, EventEnvelope, event_envelope::Payload};

use crate::{
    convert,
    domain::{Change, Status},
    store::{Article, Ticket},
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
