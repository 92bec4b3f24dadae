//! Events in and out of `dispatch`.
//!
//! Out, each enqueued in the write's transaction: `person.added`,
//! `person.updated`, `person.deactivated` (the whole person after the
//! change) and `presence.changed` (a new stated presence, with the
//! previous one). Routing publishes nothing of its own: `ticket.assigned`
//! (from tickets) is the record of an assignment.
//!
//! In ([`Handler`]): the ticket events that say whether a ticket awaits a
//! response and who has it ([`CONSUMES`]; each carries the ticket as it
//! stands), and `entitlement.resolved` (its region and asset's family).

use anyhow::Context;
use chrono::Utc;
use hotline_kit::{
    bus::{consumer::EventHandler, outbox::envelope},
    time::{from_timestamp, timestamp},
};
use hotline_proto::{
    dispatch::v1 as pb,
    events::v1::{self as ev, EventEnvelope, event_envelope::Payload},
    tickets::v1 as tk,
};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{
    domain::Presence,
    routing::Priority,
    store::{self, Entitlement, Person, TicketView},
};

/// What the router needs to hear: a ticket starts or stops awaiting a
/// response, is assigned, changes priority, is settled or reopened; and
/// what contracts knows of it.
pub const CONSUMES: &[&str] = &[
    "ticket.created",
    "ticket.awaiting_response",
    "ticket.responded",
    "ticket.assigned",
    "ticket.resolved",
    "ticket.closed",
    "ticket.reopened",
    "ticket.priority_changed",
    "entitlement.resolved",
];

/// Keeps routing's view of tickets, in the consumer's transaction; the
/// consumer wakes the router after each commit.
pub struct Handler;

impl EventHandler for Handler {
    async fn handle(&self, conn: &mut PgConnection, event: &EventEnvelope) -> anyhow::Result<()> {
        match &event.payload {
            Some(Payload::EntitlementResolved(resolved)) => {
                let ticket = Uuid::parse_str(&resolved.ticket_id)
                    .context("entitlement.resolved names no ticket by UUID")?;
                store::entitle(conn, ticket, &entitlement(resolved)).await?;
            }
            Some(payload) => {
                let ticket = snapshot(payload)
                    .with_context(|| format!("{} carries no ticket", event.r#type))?;
                store::apply_ticket(conn, &view(ticket)?, Utc::now()).await?;
            }
            None => anyhow::bail!("{} has no payload", event.r#type),
        }
        Ok(())
    }

    /// Ticket events are facts superseded by newer versions; an
    /// entitlement is one per resolution, in any order with them.
    fn ordered(&self, event: &EventEnvelope) -> bool {
        event.r#type != "entitlement.resolved"
    }

    /// Only the ticket each event carries is read.
    fn snapshots(&self) -> bool {
        true
    }

    /// Every effect is in the transaction.
    fn batched(&self) -> bool {
        true
    }
}

/// The ticket an event carries.
fn snapshot(payload: &Payload) -> Option<&tk::Ticket> {
    match payload {
        Payload::TicketCreated(e) => e.ticket.as_ref(),
        Payload::TicketAwaitingResponse(e) => e.ticket.as_ref(),
        Payload::TicketResponded(e) => e.ticket.as_ref(),
        Payload::TicketAssigned(e) => e.ticket.as_ref(),
        Payload::TicketResolved(e) => e.ticket.as_ref(),
        Payload::TicketClosed(e) => e.ticket.as_ref(),
        Payload::TicketReopened(e) => e.ticket.as_ref(),
        Payload::TicketPriorityChanged(e) => e.ticket.as_ref(),
        _ => None,
    }
}

fn view(ticket: &tk::Ticket) -> anyhow::Result<TicketView> {
    let time = |t: Option<&prost_types::Timestamp>| t.and_then(from_timestamp);
    let status = tk::Status::try_from(ticket.status).unwrap_or(tk::Status::Unspecified);
    Ok(TicketView {
        id: Uuid::parse_str(&ticket.id).context("the ticket id is not a UUID")?,
        number: ticket.number.clone(),
        priority: match tk::Priority::try_from(ticket.priority) {
            Ok(tk::Priority::Low) => Priority::Low,
            Ok(tk::Priority::High) => Priority::High,
            Ok(tk::Priority::Urgent) => Priority::Urgent,
            _ => Priority::Normal,
        },
        created_at: time(ticket.created_at.as_ref()).unwrap_or_else(Utc::now),
        awaiting_since: ticket
            .awaiting_response
            .then(|| time(ticket.awaiting_since.as_ref()))
            .flatten(),
        assignee: Some(ticket.assignee.trim().to_lowercase()).filter(|a| !a.is_empty()),
        done: matches!(status, tk::Status::Resolved | tk::Status::Closed),
    })
}

fn entitlement(resolved: &ev::EntitlementResolved) -> Entitlement {
    let text = |t: &str| Some(t.trim().to_owned()).filter(|t| !t.is_empty());
    Entitlement {
        region: resolved
            .branch
            .as_ref()
            .and_then(|b| text(&b.region))
            .map(|r| r.to_lowercase()),
        family: resolved.asset.as_ref().and_then(|a| text(&a.family)),
        customer: resolved.customer.as_ref().and_then(|c| text(&c.name)),
    }
}

pub fn presence(presence: Presence) -> pb::Presence {
    match presence {
        Presence::Online => pb::Presence::Online,
        Presence::Away => pb::Presence::Away,
        Presence::Offline => pb::Presence::Offline,
    }
}

/// `person` as the wire says it; `alive`: whether their heartbeat holds,
/// which makes their stated presence their presence.
pub fn person(person: &Person, alive: bool) -> pb::Person {
    shown(person, alive, 0)
}

/// [`person`] with the awaiting tickets they have now.
pub fn shown(person: &Person, alive: bool, assigned: u32) -> pb::Person {
    let profile = &person.profile;
    pb::Person {
        id: person.id.to_string(),
        name: profile.name.clone(),
        email: profile.email.clone(),
        phone: profile.phone.clone().unwrap_or_default(),
        roles: profile
            .roles
            .iter()
            .map(|r| r.as_str().to_owned())
            .collect(),
        team: profile.team.clone().unwrap_or_default(),
        skills: profile
            .skills
            .iter()
            .map(|s| pb::Skill {
                name: s.name.clone(),
                level: u32::from(s.level),
            })
            .collect(),
        regions: profile.regions.clone(),
        capacity: profile.capacity,
        home_lat: profile.home.map(|h| h.0),
        home_lng: profile.home.map(|h| h.1),
        time_zone: profile.time_zone.clone().unwrap_or_default(),
        active: person.active,
        stated_presence: presence(person.presence) as i32,
        presence: presence(person.presence.effective(alive && person.active)) as i32,
        last_assigned_at: person.last_assigned_at.map(timestamp),
        created_at: Some(timestamp(person.created_at)),
        updated_at: Some(timestamp(person.updated_at)),
        assigned,
    }
}

/// A new person is offline until they say otherwise.
pub fn person_added(added: &Person) -> EventEnvelope {
    envelope(
        "person.added",
        None,
        Utc::now(),
        Payload::PersonAdded(ev::PersonAdded {
            person: Some(person(added, false)),
        }),
    )
}

pub fn person_updated(updated: &Person, alive: bool) -> EventEnvelope {
    envelope(
        "person.updated",
        None,
        Utc::now(),
        Payload::PersonUpdated(ev::PersonUpdated {
            person: Some(person(updated, alive)),
        }),
    )
}

pub fn person_deactivated(deactivated: &Person) -> EventEnvelope {
    envelope(
        "person.deactivated",
        None,
        Utc::now(),
        Payload::PersonDeactivated(ev::PersonDeactivated {
            person: Some(person(deactivated, false)),
        }),
    )
}

/// Written after the heartbeat was kept: the new stated presence holds.
pub fn presence_changed(changed: &Person, previous: Presence) -> EventEnvelope {
    envelope(
        "presence.changed",
        None,
        Utc::now(),
        Payload::PresenceChanged(ev::PresenceChanged {
            person: Some(person(changed, true)),
            previous: presence(previous) as i32,
        }),
    )
}
