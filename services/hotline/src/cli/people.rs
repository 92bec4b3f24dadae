//! `hotline people add|list|show|update|deactivate|adopt-pager` and
//! `hotline presence set|heartbeat`: the directory of people and their
//! presence, through `DispatchService` (and the pager's legacy people, to
//! adopt them). A person is named by id or email; a token's subject
//! is its holder's email, so `presence set` needs no name.

use clap::{Args, Subcommand};
use hotline_proto::{
    dispatch::v1::{self as pb, dispatch_service_client::DispatchServiceClient},
    pager::v1::{self as pager, pager_service_client::PagerServiceClient},
};
use serde_json::{Map, Value, json};

use super::{
    Failure, Output, connect,
    text::line,
    tickets::{optional, time},
};

#[derive(Subcommand)]
pub enum PeopleCommand {
    /// Add a person to the directory (managers).
    Add {
        /// Their name.
        #[arg(long)]
        name: String,
        /// Their email, unique: also the subject of their token.
        #[arg(long)]
        email: String,
        /// agent, technician, dispatcher, manager or admin; repeatable.
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
        #[command(flatten)]
        details: Details,
    },
    /// People by name: the active ones, or those asked for.
    List {
        /// Only people with this role.
        #[arg(long)]
        role: Option<String>,
        /// Only people online now (stated online, heartbeat alive).
        #[arg(long)]
        online: bool,
        /// Deactivated people too.
        #[arg(long)]
        all: bool,
    },
    /// One person, with their presence now.
    Show {
        /// Id or email.
        person: String,
    },
    /// Change what is given, keep the rest (managers).
    Update {
        /// Id or email.
        person: String,
        /// A new name.
        #[arg(long)]
        name: Option<String>,
        /// A new email.
        #[arg(long)]
        email: Option<String>,
        /// Replaces all roles; repeatable.
        #[arg(long = "role")]
        roles: Vec<String>,
        #[command(flatten)]
        details: Details,
        /// Remove the home base (not for technicians).
        #[arg(long, conflicts_with_all = ["home_lat", "home_lng"])]
        no_home: bool,
    },
    /// Deactivate a person: kept in the directory, offline, never routed to (managers).
    Deactivate {
        /// Id or email.
        person: String,
    },
    /// Add the pager's people from before the directory to it, each with
    /// their email, and report who could not be (managers).
    AdoptPager {
        /// The roles each is added with; repeatable (default agent).
        #[arg(long = "role")]
        roles: Vec<String>,
    },
}

/// What `add` and `update` both take; on update, an empty value removes it.
#[derive(Args)]
pub struct Details {
    /// Their number, any format (stored in E.164).
    #[arg(long)]
    phone: Option<String>,
    /// Their team.
    #[arg(long)]
    team: Option<String>,
    /// Skills with levels 1-5, comma-separated: nvr:3,ptz:2,lang:de (no level: 1).
    #[arg(long)]
    skills: Option<String>,
    /// Regions they serve, comma-separated: north,south.
    #[arg(long)]
    regions: Option<String>,
    /// Awaiting tickets at once, 0 to 1000 (default 10).
    #[arg(long)]
    capacity: Option<u32>,
    /// Latitude of their home base (with --home-lng); technicians need one.
    #[arg(long, requires = "home_lng", allow_negative_numbers = true)]
    home_lat: Option<f64>,
    /// Longitude of their home base (with --home-lat).
    #[arg(long, requires = "home_lat", allow_negative_numbers = true)]
    home_lng: Option<f64>,
    /// Their IANA time zone, like Europe/Berlin; technicians need one.
    #[arg(long)]
    timezone: Option<String>,
}

#[derive(Subcommand)]
pub enum PresenceCommand {
    /// Say whether you are online, away or offline (also a heartbeat).
    Set {
        /// online, away or offline.
        #[arg(value_parser = ["online", "away", "offline"])]
        presence: String,
        /// Someone else, by id or email (dispatchers, managers).
        #[arg(long)]
        person: Option<String>,
    },
    /// Keep your presence alive: without one within the heartbeat TTL (90s), you are offline.
    Heartbeat,
}

/// A comma list as a list; an empty text is an empty list.
fn list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .collect()
}

fn presence_name(value: i32) -> &'static str {
    match pb::Presence::try_from(value) {
        Ok(pb::Presence::Online) => "online",
        Ok(pb::Presence::Away) => "away",
        Ok(pb::Presence::Offline) => "offline",
        _ => "unknown",
    }
}

fn presence_value(name: &str) -> pb::Presence {
    match name {
        "online" => pb::Presence::Online,
        "away" => pb::Presence::Away,
        _ => pb::Presence::Offline,
    }
}

/// A person as JSON; `assigned`: the tickets they have awaiting a response.
fn person_json(person: &pb::Person) -> Value {
    let skills: Map<String, Value> = person
        .skills
        .iter()
        .map(|s| (s.name.clone(), json!(s.level)))
        .collect();
    let home = match (person.home_lat, person.home_lng) {
        (Some(lat), Some(lng)) => json!({ "lat": lat, "lng": lng }),
        _ => Value::Null,
    };
    json!({
        "id": person.id,
        "name": person.name,
        "email": person.email,
        "phone": optional(&person.phone),
        "roles": person.roles,
        "team": optional(&person.team),
        "skills": skills,
        "regions": person.regions,
        "capacity": person.capacity,
        "assigned": person.assigned,
        "presence": presence_name(person.presence),
        "stated_presence": presence_name(person.stated_presence),
        "active": person.active,
        "home": home,
        "timezone": optional(&person.time_zone),
        "last_assigned_at": time(person.last_assigned_at.as_ref()),
        "created_at": time(person.created_at.as_ref()),
        "updated_at": time(person.updated_at.as_ref()),
    })
}

fn skills_text(person: &pb::Person) -> String {
    person
        .skills
        .iter()
        .map(|s| format!("{}:{}", s.name, s.level))
        .collect::<Vec<_>>()
        .join(",")
}

/// One line of `people list`.
fn person_line(person: &pb::Person) -> String {
    format!(
        "{}\t{}\t{}\t{}{}\t{}\t{}",
        person.id,
        line(&person.name),
        person.email,
        presence_name(person.presence),
        if person.active { "" } else { " (deactivated)" },
        person.roles.join(","),
        skills_text(person),
    )
}

/// `people show` as text.
fn person_text(person: &pb::Person) -> String {
    let or_dash = |value: &str| {
        if value.is_empty() {
            "-".to_owned()
        } else {
            line(value).into_owned()
        }
    };
    let presence = if person.presence == person.stated_presence {
        presence_name(person.presence).to_owned()
    } else {
        format!(
            "{} (says {}; no heartbeat)",
            presence_name(person.presence),
            presence_name(person.stated_presence)
        )
    };
    let home = match (person.home_lat, person.home_lng) {
        (Some(lat), Some(lng)) => format!("{lat}, {lng}"),
        _ => "-".into(),
    };
    [
        format!("{}\t{}", person.id, line(&person.name)),
        format!("email\t{}", person.email),
        format!("phone\t{}", or_dash(&person.phone)),
        format!("roles\t{}", person.roles.join(", ")),
        format!("team\t{}", or_dash(&person.team)),
        format!("skills\t{}", or_dash(&skills_text(person))),
        format!("regions\t{}", or_dash(&person.regions.join(", "))),
        format!("capacity\t{}", person.capacity),
        format!("assigned\t{} awaiting a response", person.assigned),
        format!("presence\t{presence}"),
        format!("home\t{home}"),
        format!("timezone\t{}", or_dash(&person.time_zone)),
        format!(
            "active\t{}",
            if person.active {
                "yes"
            } else {
                "no (deactivated)"
            }
        ),
    ]
    .join("\n")
}

fn show(output: &Output, person: &pb::Person) {
    output.print(person_json(person), || person_text(person));
}

pub async fn people(command: PeopleCommand, output: &Output) -> Result<(), Failure> {
    let mut client = DispatchServiceClient::new(connect()?);
    match command {
        PeopleCommand::Add {
            name,
            email,
            roles,
            details,
        } => {
            let person = client
                .add_person(pb::AddPersonRequest {
                    name,
                    email,
                    phone: details.phone.unwrap_or_default(),
                    roles,
                    team: details.team.unwrap_or_default(),
                    skills: details.skills.as_deref().map(list).unwrap_or_default(),
                    regions: details.regions.as_deref().map(list).unwrap_or_default(),
                    capacity: details.capacity,
                    home_lat: details.home_lat,
                    home_lng: details.home_lng,
                    time_zone: details.timezone.unwrap_or_default(),
                })
                .await?
                .into_inner();
            show(output, &person);
        }
        PeopleCommand::List { role, online, all } => {
            let found = client
                .list_people(pb::ListPeopleRequest {
                    role: role.unwrap_or_default(),
                    online,
                    include_inactive: all,
                    limit: 0,
                })
                .await?
                .into_inner();
            output.print(
                json!(found.people.iter().map(person_json).collect::<Vec<_>>()),
                || {
                    if found.people.is_empty() {
                        "none".into()
                    } else {
                        found
                            .people
                            .iter()
                            .map(person_line)
                            .collect::<Vec<_>>()
                            .join("\n")
                    }
                },
            );
        }
        PeopleCommand::Show { person } => {
            let person = client
                .get_person(pb::GetPersonRequest { person })
                .await?
                .into_inner();
            show(output, &person);
        }
        PeopleCommand::Update {
            person,
            name,
            email,
            roles,
            details,
            no_home,
        } => {
            let values = |text: Option<String>| text.map(|t| pb::Values { values: list(&t) });
            let person = client
                .update_person(pb::UpdatePersonRequest {
                    person,
                    name,
                    email,
                    phone: details.phone,
                    roles: (!roles.is_empty()).then_some(pb::Values { values: roles }),
                    team: details.team,
                    skills: values(details.skills),
                    regions: values(details.regions),
                    capacity: details.capacity,
                    home_lat: details.home_lat,
                    home_lng: details.home_lng,
                    clear_home: no_home,
                    time_zone: details.timezone,
                })
                .await?
                .into_inner();
            show(output, &person);
        }
        PeopleCommand::AdoptPager { roles } => {
            let adopted = adopt_pager(&mut client, roles).await?;
            output.print(json!(adopted), || {
                let lines: Vec<String> = adopted.iter().map(adoption_line).collect();
                if lines.is_empty() {
                    "the pager has no legacy people left: nothing to adopt".into()
                } else {
                    lines.join("\n")
                }
            });
        }
        PeopleCommand::Deactivate { person } => {
            let person = client
                .deactivate_person(pb::DeactivatePersonRequest { person })
                .await?
                .into_inner();
            show(output, &person);
        }
    }
    Ok(())
}

/// What became of one legacy pager person.
#[derive(serde::Serialize)]
struct Adoption {
    name: String,
    email: Option<String>,
    /// `added`, `already` (someone in the directory has their email: the
    /// pager pages that person for them) or `not_added`.
    outcome: &'static str,
    /// The directory person who stands for them now.
    person: Option<String>,
    /// Why not, or who already has the email.
    reason: Option<String>,
}

fn adoption_line(adoption: &Adoption) -> String {
    let who = format!(
        "{} <{}>",
        line(&adoption.name),
        line(adoption.email.as_deref().unwrap_or("no email"))
    );
    let reason = adoption.reason.as_deref().map(line).unwrap_or_default();
    match adoption.outcome {
        "added" => format!("added\t{who}"),
        "already" => format!("already\t{who}\t{reason}"),
        _ => format!("NOT ADDED\t{who}\t{reason}"),
    }
}

/// Adds each legacy person of the pager to the directory, with `roles`;
/// the pager links them by email when it hears of the addition.
async fn adopt_pager(
    client: &mut DispatchServiceClient<
        tonic::service::interceptor::InterceptedService<
            tonic::transport::Channel,
            hotline_kit::grpc::BearerToken,
        >,
    >,
    roles: Vec<String>,
) -> Result<Vec<Adoption>, Failure> {
    let roles = if roles.is_empty() {
        vec!["agent".to_owned()]
    } else {
        roles
    };
    let legacy = PagerServiceClient::new(connect()?)
        .list_people(pager::ListPeopleRequest {})
        .await?
        .into_inner()
        .people
        .into_iter()
        .filter(|p| p.legacy);
    let mut adopted = Vec::new();
    for person in legacy {
        let email = person.email.trim().to_owned();
        let mut adoption = Adoption {
            name: person.name.clone(),
            email: (!email.is_empty()).then(|| email.clone()),
            outcome: "not_added",
            person: None,
            reason: None,
        };
        if email.is_empty() {
            adoption.reason = Some(
                "no email: add them with `hotline people add --name N --email E --role agent`, \
                 then name them by email on schedules and levels"
                    .into(),
            );
            adopted.push(adoption);
            continue;
        }
        let added = client
            .add_person(pb::AddPersonRequest {
                name: person.name,
                email: email.clone(),
                roles: roles.clone(),
                ..Default::default()
            })
            .await;
        match added {
            Ok(added) => {
                adoption.outcome = "added";
                adoption.person = Some(added.into_inner().id);
            }
            Err(status) if status.code() == tonic::Code::AlreadyExists => {
                let holder = client
                    .get_person(pb::GetPersonRequest {
                        person: email.clone(),
                    })
                    .await?
                    .into_inner();
                adoption.outcome = "already";
                adoption.reason = Some(format!(
                    "{email} is {}'s in the directory{}: the pager pages them for {:?}",
                    holder.name,
                    if holder.active { "" } else { " (deactivated)" },
                    adoption.name
                ));
                adoption.person = Some(holder.id);
            }
            Err(status)
                if matches!(
                    status.code(),
                    tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition
                ) =>
            {
                adoption.reason = Some(status.message().to_owned());
            }
            Err(status) => return Err(status.into()),
        }
        adopted.push(adoption);
    }
    Ok(adopted)
}

pub async fn presence(command: PresenceCommand, output: &Output) -> Result<(), Failure> {
    let mut client = DispatchServiceClient::new(connect()?);
    let person = match command {
        PresenceCommand::Set { presence, person } => {
            client
                .set_presence(pb::SetPresenceRequest {
                    presence: presence_value(&presence) as i32,
                    person: person.unwrap_or_default(),
                })
                .await?
        }
        PresenceCommand::Heartbeat => client.heartbeat(pb::HeartbeatRequest {}).await?,
    }
    .into_inner();
    output.print(person_json(&person), || {
        format!("{} is {}", person.email, presence_name(person.presence))
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comma_lists_drop_blanks_and_an_empty_one_clears() {
        assert_eq!(list("nvr:3, lang:de,"), ["nvr:3", "lang:de"]);
        assert!(list("").is_empty());
    }

    #[test]
    fn a_person_shows_skills_by_name_and_no_home_as_null() {
        let person = pb::Person {
            id: "p1".into(),
            name: "Ana".into(),
            email: "ana@desk.example".into(),
            roles: vec!["agent".into()],
            skills: vec![pb::Skill {
                name: "lang:de".into(),
                level: 1,
            }],
            presence: pb::Presence::Offline as i32,
            stated_presence: pb::Presence::Online as i32,
            ..Default::default()
        };
        let value = person_json(&person);
        assert_eq!(value["skills"], json!({ "lang:de": 1 }));
        assert_eq!(value["home"], Value::Null);
        assert_eq!(value["presence"], "offline");
        assert!(person_text(&person).contains("offline (says online; no heartbeat)"));
    }
}
