//! The directory's facts on the bus, each enqueued in the write's
//! transaction: `person.added`, `person.updated`, `person.deactivated`
//! (the whole person after the change) and `presence.changed` (a new
//! stated presence, with the previous one). `dispatch` consumes nothing
//! yet; routing will.

use chrono::Utc;
use hotline_kit::{bus::outbox::envelope, time::timestamp};
use hotline_proto::{
    dispatch::v1 as pb,
    events::v1::{self as ev, EventEnvelope, event_envelope::Payload},
};

use crate::{domain::Presence, store::Person};

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
