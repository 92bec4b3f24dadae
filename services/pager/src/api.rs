//! `hotline.pager.v1.PagerService` over gRPC.

use std::{collections::HashMap, time::Duration};

use chrono::{SubsecRound, Utc};
use hotline_kit::{
    auth::{Role, authorize},
    bus::outbox::OutboxSignal,
    grpc::ServiceToken,
    input::line,
    time::{from_timestamp, timestamp},
};
use hotline_proto::pager::v1::{
    self as pb, AcknowledgeRequest, AcknowledgeResponse, ListLevelTargetsRequest,
    ListLevelTargetsResponse, ListPagesRequest, ListPagesResponse, ListPeopleRequest,
    ListPeopleResponse, ListSchedulesRequest, ListSchedulesResponse, PageState, WhoIsOnCallRequest,
    WhoIsOnCallResponse, pager_service_server::PagerService, target,
};
use hotline_proto::tickets::v1::{GetTicketRequest, ticket_service_client::TicketServiceClient};
use sqlx::PgPool;
use tonic::{
    Code, Request, Response, Status, service::interceptor::InterceptedService, transport::Channel,
};

use crate::{
    events::{AckError, acknowledge},
    people::{self, Named, Refusal},
    schedule::Override,
    store::{self, Target},
};

/// Who may read pages and on-call, and acknowledge.
const DESK: &[Role] = &[
    Role::Agent,
    Role::Dispatcher,
    Role::Manager,
    Role::Technician,
];
/// Who may decide who gets woken: the people's webhooks, the rotations and
/// each level's targets are the desk's standing arrangements, a manager's
/// to make.
const MANAGERS: &[Role] = &[Role::Manager];
/// Who may swap a shift (an override): dispatchers too, who run the night
/// and find the stand-in when someone falls ill.
const SHIFT_PLANNERS: &[Role] = &[Role::Dispatcher, Role::Manager];

/// Names of schedules (they are typed on the command line).
const MAX_NAME_CHARS: usize = 100;
const MAX_EMAIL_CHARS: usize = 254;
const MAX_URL_CHARS: usize = 2000;
const MAX_TIME_ZONE_CHARS: usize = 64;
/// Participants of one rotation.
const MAX_PARTICIPANTS: usize = 100;
/// Targets of one level.
const MAX_TARGETS: usize = 20;
/// The highest level with targets of its own (the ladder's later levels use
/// the nearest level below them).
const MAX_LEVEL: i32 = 100;

/// The tickets service, called as the pager.
pub type Tickets = TicketServiceClient<InterceptedService<Channel, ServiceToken>>;

pub struct PagerApi {
    pool: PgPool,
    relay: OutboxSignal,
    tickets: Tickets,
}

impl PagerApi {
    pub fn new(pool: PgPool, relay: OutboxSignal, tickets: Tickets) -> Self {
        Self {
            pool,
            relay,
            tickets,
        }
    }

    /// The refusal for `ticket` without a breach. The pager knows only
    /// tickets that breached, so the tickets service says whether this one
    /// exists at all: "has no breach" of a mistyped number would send the
    /// agent looking for a breach that cannot be.
    async fn no_breach(&self, ticket: &str, error: AckError) -> Status {
        let asked = self
            .tickets
            .clone()
            .get_ticket(GetTicketRequest {
                ticket: ticket.to_owned(),
            })
            .await;
        match asked {
            Ok(_) => Status::failed_precondition(error.to_string()),
            Err(status) if matches!(status.code(), Code::NotFound | Code::InvalidArgument) => {
                Status::new(status.code(), status.message())
            }
            Err(status) => {
                tracing::warn!(%status, ticket, "cannot ask the tickets service whether the ticket exists");
                Status::not_found(error.to_string())
            }
        }
    }
}

fn internal(error: impl std::fmt::Display) -> Status {
    tracing::error!(%error, "pager request failed");
    Status::internal("the pager service could not complete the request")
}

fn page_state(state: &str) -> PageState {
    match state {
        "pending" => PageState::Pending,
        "delivered" => PageState::Delivered,
        "failed" => PageState::Failed,
        "cancelled" => PageState::Cancelled,
        _ => PageState::Unspecified,
    }
}

fn required(value: &str, what: &str) -> Result<String, Status> {
    let value = value.trim();
    if value.is_empty() {
        return Err(Status::invalid_argument(format!("{what} is required")));
    }
    Ok(value.to_owned())
}

/// The name of a person or a schedule: one line, and no comma, which
/// separates names in the command line's lists.
fn name(value: &str, what: &str) -> Result<String, Status> {
    let name = line(value, what, MAX_NAME_CHARS)?
        .ok_or_else(|| Status::invalid_argument(format!("{what} is required")))?;
    if name.contains(',') {
        return Err(Status::invalid_argument(format!(
            "{what} {name:?} contains a comma, which separates names in lists: leave it out"
        )));
    }
    Ok(name)
}

fn check_url(url: &str) -> Result<(), Status> {
    if url.is_empty() || url.starts_with("https://") || url.starts_with("http://") {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "webhook_url {url:?} must be an http(s) URL"
        )))
    }
}

/// The emails a schedule or a level stores for `references`: each must be
/// an active directory person (a legacy name adopted by one is taken too).
/// The refusal names every one that cannot be put there, and why.
async fn arranged(pool: &PgPool, references: &[String]) -> Result<Vec<String>, Status> {
    let mut conn = pool.acquire().await.map_err(internal)?;
    let directory = store::directory(&mut conn).await.map_err(internal)?;
    let (mut emails, mut refusals) = (Vec::new(), Vec::new());
    for reference in references {
        match directory.for_arrangement(reference) {
            Ok(email) => emails.push(email),
            Err(refusal) => refusals.push(refusal),
        }
    }
    if refusals.is_empty() {
        return Ok(emails);
    }
    let code = if refusals
        .iter()
        .all(|r| matches!(r, Refusal::Deactivated(_)))
    {
        Code::FailedPrecondition
    } else {
        Code::NotFound
    };
    let message = refusals
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    Err(Status::new(code, message))
}

/// A person as a schedule or level names them: one line, required.
fn person_reference(value: &str, what: &str) -> Result<String, Status> {
    line(value, what, MAX_EMAIL_CHARS)?
        .ok_or_else(|| Status::invalid_argument(format!("{what} is required")))
}

fn person_message(person: &people::Person) -> pb::Person {
    pb::Person {
        name: person.name.clone(),
        email: person.email.clone(),
        webhook_url: person.webhook_url.clone(),
        id: person.id.to_string(),
        active: person.active,
        legacy: false,
    }
}

/// Refuses names of schedules that do not exist.
async fn known_schedules(pool: &PgPool, names: &[String]) -> Result<(), Status> {
    let unknown = store::unknown_schedules(pool, names)
        .await
        .map_err(internal)?;
    if unknown.is_empty() {
        return Ok(());
    }
    Err(Status::not_found(format!(
        "no schedule {}: add it first, or correct the name",
        quoted(&unknown)
    )))
}

/// `"ana"`, `"ana", "bo"`.
fn quoted(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("{n:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn target_message(target: Target) -> pb::Target {
    pb::Target {
        target: Some(match target {
            Target::Schedule(name) => target::Target::Schedule(name),
            Target::Person(name) => target::Target::Person(name),
        }),
    }
}

fn override_message(schedule: &str, taken: &Override) -> pb::Override {
    pb::Override {
        schedule: schedule.to_owned(),
        person: taken.person.clone(),
        starts_at: Some(timestamp(taken.starts_at)),
        ends_at: Some(timestamp(taken.ends_at)),
    }
}

#[tonic::async_trait]
impl PagerService for PagerApi {
    async fn list_pages(
        &self,
        request: Request<ListPagesRequest>,
    ) -> Result<Response<ListPagesResponse>, Status> {
        authorize(&request, DESK)?;
        let request = request.get_ref();
        let ticket = Some(request.ticket.trim()).filter(|t| !t.is_empty());
        let limit = i64::from(match request.limit {
            0 => 100,
            n => n.min(500),
        });
        let (rows, attempts) = store::pages(&self.pool, ticket, limit)
            .await
            .map_err(internal)?;
        let mut by_delivery: HashMap<i64, Vec<pb::Attempt>> = HashMap::new();
        for attempt in attempts {
            by_delivery
                .entry(attempt.delivery_id)
                .or_default()
                .push(pb::Attempt {
                    at: Some(timestamp(attempt.at)),
                    status: attempt.status,
                    error: attempt.error.unwrap_or_default(),
                    latency: prost_types::Duration::try_from(Duration::from_millis(
                        u64::try_from(attempt.latency_ms).unwrap_or(0),
                    ))
                    .ok(),
                });
        }
        let pages = rows
            .into_iter()
            .map(|row| pb::Page {
                id: row.id,
                ticket_id: row.ticket_id.to_string(),
                number: row.number,
                breach: row.breach,
                level: row.level,
                action: row.action,
                channel: row.channel,
                target: row.target,
                dedup_key: row.dedup_key,
                state: page_state(&row.state) as i32,
                last_error: row.last_error.unwrap_or_default(),
                created_at: Some(timestamp(row.created_at)),
                delivered_at: row.delivered_at.map(timestamp),
                attempts: by_delivery.remove(&row.id).unwrap_or_default(),
            })
            .collect();
        Ok(Response::new(ListPagesResponse { pages }))
    }

    async fn acknowledge(
        &self,
        request: Request<AcknowledgeRequest>,
    ) -> Result<Response<AcknowledgeResponse>, Status> {
        let caller = authorize(&request, DESK)?;
        let ticket = required(&request.get_ref().ticket, "ticket")?;
        match acknowledge(
            &self.pool,
            &ticket,
            None,
            &caller.subject,
            "grpc",
            &self.relay,
        )
        .await
        {
            Ok(done) => Ok(Response::new(AcknowledgeResponse {
                ticket_id: done.breach.ticket_id.to_string(),
                breach: done.breach.breach,
                acknowledged_at: done.breach.acknowledged_at.map(timestamp),
                acknowledged_by: done.breach.acknowledged_by.unwrap_or_default(),
                first: done.first,
            })),
            Err(error @ AckError::NoBreach(_)) => Err(self.no_breach(&ticket, error).await),
            Err(error @ AckError::Cleared(_)) => {
                Err(Status::failed_precondition(error.to_string()))
            }
            Err(AckError::Store(error)) => Err(internal(format!("{error:#}"))),
        }
    }

    async fn who_is_on_call(
        &self,
        request: Request<WhoIsOnCallRequest>,
    ) -> Result<Response<WhoIsOnCallResponse>, Status> {
        authorize(&request, DESK)?;
        let at = request
            .get_ref()
            .at
            .as_ref()
            .and_then(from_timestamp)
            .unwrap_or_else(Utc::now);
        let mut conn = self.pool.acquire().await.map_err(internal)?;
        let schedules = store::schedules(&mut conn).await.map_err(internal)?;
        let directory = store::directory(&mut conn).await.map_err(internal)?;
        let on_call = schedules
            .iter()
            .map(|schedule| {
                let now = schedule.rotation.on_call(&schedule.overrides, at);
                pb::OnCall {
                    schedule: schedule.name.clone(),
                    person: now
                        .as_ref()
                        .and_then(|o| directory.on_call(&o.person))
                        .unwrap_or_default(),
                    overridden: now.as_ref().is_some_and(|o| o.overridden),
                    shift_ends_at: now.map(|o| timestamp(o.until)),
                }
            })
            .collect();
        Ok(Response::new(WhoIsOnCallResponse { on_call }))
    }

    async fn put_person(
        &self,
        request: Request<pb::Person>,
    ) -> Result<Response<pb::Person>, Status> {
        authorize(&request, MANAGERS)?;
        let person = request.into_inner();
        let webhook_url =
            line(&person.webhook_url, "webhook_url", MAX_URL_CHARS)?.unwrap_or_default();
        check_url(&webhook_url)?;
        let reference = [&person.id, &person.email]
            .into_iter()
            .map(|r| r.trim())
            .find(|r| !r.is_empty());
        let Some(reference) = reference else {
            return Err(Status::failed_precondition(
                "people are added in the directory (`hotline people add --name N --email E \
                 --role agent`); name one by email or id to set their webhook",
            ));
        };
        let reference = person_reference(reference, "the person's email or id")?;
        let mut conn = self.pool.acquire().await.map_err(internal)?;
        let directory = store::directory(&mut conn).await.map_err(internal)?;
        drop(conn);
        let found = match directory.find(&reference) {
            Named::Person(found, None) => found,
            _ => {
                return Err(Status::failed_precondition(format!(
                    "no one in the directory is {reference:?}: people are added in the \
                     directory (`hotline people add --name N --email {reference} --role \
                     agent`), then given a webhook here"
                )));
            }
        };
        if !found.active {
            return Err(Status::failed_precondition(format!(
                "{} is deactivated in the directory and is never paged",
                found.email
            )));
        }
        if !store::set_webhook(&self.pool, found.id, &webhook_url)
            .await
            .map_err(internal)?
        {
            return Err(internal(format!("person {} vanished", found.id)));
        }
        Ok(Response::new(person_message(&people::Person {
            webhook_url,
            ..found.clone()
        })))
    }

    async fn list_people(
        &self,
        request: Request<ListPeopleRequest>,
    ) -> Result<Response<ListPeopleResponse>, Status> {
        authorize(&request, DESK)?;
        let mut conn = self.pool.acquire().await.map_err(internal)?;
        let directory = store::directory(&mut conn).await.map_err(internal)?;
        let people = directory
            .people
            .iter()
            .map(person_message)
            .chain(directory.unadopted().map(|legacy| pb::Person {
                name: legacy.name.clone(),
                email: legacy.email.clone(),
                webhook_url: legacy.webhook_url.clone(),
                id: String::new(),
                active: true,
                legacy: true,
            }))
            .collect();
        Ok(Response::new(ListPeopleResponse { people }))
    }

    async fn put_schedule(
        &self,
        request: Request<pb::Schedule>,
    ) -> Result<Response<pb::Schedule>, Status> {
        authorize(&request, MANAGERS)?;
        let schedule = request.into_inner();
        let name = name(&schedule.name, "name")?;
        let time_zone =
            line(&schedule.time_zone, "time_zone", MAX_TIME_ZONE_CHARS)?.ok_or_else(|| {
                Status::invalid_argument("time_zone is required, an IANA zone like Europe/Berlin")
            })?;
        let shift = schedule
            .shift_length
            .and_then(|d| Duration::try_from(d).ok())
            .filter(|d| (Duration::from_secs(60)..=Duration::from_secs(366 * 86_400)).contains(d))
            .ok_or_else(|| {
                Status::invalid_argument(
                    "shift_length must be between a minute and a year, e.g. 1d or 7d",
                )
            })?;
        if schedule.participants.is_empty() {
            return Err(Status::invalid_argument(
                "a schedule needs at least one participant to take the shifts",
            ));
        }
        if schedule.participants.len() > MAX_PARTICIPANTS {
            return Err(Status::invalid_argument(format!(
                "a schedule takes at most {MAX_PARTICIPANTS} participants"
            )));
        }
        let participants = schedule
            .participants
            .iter()
            .map(|p| person_reference(p, "a participant"))
            .collect::<Result<Vec<_>, _>>()?;
        let starts = line(&schedule.starts, "starts", MAX_TIME_ZONE_CHARS)?.unwrap_or_default();
        let mut rotation = store::rotation(&time_zone, participants, shift, &starts)
            .map_err(Status::invalid_argument)?;
        rotation.participants = arranged(&self.pool, &rotation.participants).await?;
        store::put_schedule(&self.pool, &name, &rotation)
            .await
            .map_err(internal)?;
        Ok(Response::new(pb::Schedule {
            name,
            time_zone: rotation.time_zone.name().to_owned(),
            participants: rotation.participants,
            shift_length: prost_types::Duration::try_from(rotation.shift).ok(),
            starts: rotation.starts.format("%Y-%m-%dT%H:%M").to_string(),
            overrides: Vec::new(),
        }))
    }

    async fn list_schedules(
        &self,
        request: Request<ListSchedulesRequest>,
    ) -> Result<Response<ListSchedulesResponse>, Status> {
        authorize(&request, DESK)?;
        let now = Utc::now();
        let mut conn = self.pool.acquire().await.map_err(internal)?;
        let schedules = store::schedules(&mut conn)
            .await
            .map_err(internal)?
            .into_iter()
            .map(|s| pb::Schedule {
                overrides: s
                    .overrides
                    .iter()
                    .filter(|o| o.ends_at > now)
                    .map(|o| override_message(&s.name, o))
                    .collect(),
                name: s.name,
                time_zone: s.rotation.time_zone.name().to_owned(),
                participants: s.rotation.participants,
                shift_length: prost_types::Duration::try_from(s.rotation.shift).ok(),
                starts: s.rotation.starts.format("%Y-%m-%dT%H:%M").to_string(),
            })
            .collect();
        Ok(Response::new(ListSchedulesResponse { schedules }))
    }

    async fn add_override(
        &self,
        request: Request<pb::Override>,
    ) -> Result<Response<pb::Override>, Status> {
        authorize(&request, SHIFT_PLANNERS)?;
        let taken = request.into_inner();
        let schedule = name(&taken.schedule, "schedule")?;
        let person = person_reference(&taken.person, "person")?;
        // To the microsecond PostgreSQL keeps, so the answer is what is stored.
        let moment = |at: Option<&prost_types::Timestamp>| {
            at.and_then(from_timestamp).map(|at| at.trunc_subsecs(6))
        };
        let (Some(starts_at), Some(ends_at)) = (
            moment(taken.starts_at.as_ref()),
            moment(taken.ends_at.as_ref()),
        ) else {
            return Err(Status::invalid_argument(
                "starts_at and ends_at are required",
            ));
        };
        if ends_at <= starts_at {
            return Err(Status::invalid_argument(format!(
                "an override must end after it starts: it ends at {} and starts at {}",
                ends_at.to_rfc3339(),
                starts_at.to_rfc3339()
            )));
        }
        if ends_at <= Utc::now() {
            return Err(Status::invalid_argument(format!(
                "the override would be over already (it ends at {}): give a time to come",
                ends_at.to_rfc3339()
            )));
        }
        known_schedules(&self.pool, std::slice::from_ref(&schedule)).await?;
        let person = arranged(&self.pool, std::slice::from_ref(&person))
            .await?
            .remove(0);
        let taken = Override {
            person,
            starts_at,
            ends_at,
        };
        if !store::add_override(&self.pool, &schedule, &taken)
            .await
            .map_err(internal)?
        {
            return Err(Status::not_found(format!("no schedule {schedule:?}")));
        }
        Ok(Response::new(override_message(&schedule, &taken)))
    }

    async fn set_level_targets(
        &self,
        request: Request<pb::LevelTargets>,
    ) -> Result<Response<pb::LevelTargets>, Status> {
        authorize(&request, MANAGERS)?;
        let levels = request.into_inner();
        if !(1..=MAX_LEVEL).contains(&levels.level) {
            return Err(Status::invalid_argument(format!(
                "level {} is not one of the ladder's: levels go from 1 to {MAX_LEVEL}",
                levels.level
            )));
        }
        if levels.targets.len() > MAX_TARGETS {
            return Err(Status::invalid_argument(format!(
                "a level takes at most {MAX_TARGETS} targets"
            )));
        }
        let targets = levels
            .targets
            .iter()
            .map(|t| match &t.target {
                Some(target::Target::Schedule(schedule)) => {
                    name(schedule, "a schedule target's name").map(Target::Schedule)
                }
                Some(target::Target::Person(person)) => {
                    person_reference(person, "a person target").map(Target::Person)
                }
                None => Err(Status::invalid_argument(
                    "a target is a schedule or a person",
                )),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let (mut schedules, mut people) = (Vec::new(), Vec::new());
        for target in &targets {
            match target {
                Target::Schedule(name) => schedules.push(name.clone()),
                Target::Person(name) => people.push(name.clone()),
            }
        }
        known_schedules(&self.pool, &schedules).await?;
        let mut emails = arranged(&self.pool, &people).await?.into_iter();
        let targets: Vec<Target> = targets
            .into_iter()
            .map(|target| match target {
                Target::Person(name) => Target::Person(emails.next().unwrap_or(name)),
                schedule => schedule,
            })
            .collect();
        store::set_level_targets(&self.pool, levels.level, &targets)
            .await
            .map_err(internal)?;
        Ok(Response::new(pb::LevelTargets {
            level: levels.level,
            targets: targets.into_iter().map(target_message).collect(),
        }))
    }

    async fn list_level_targets(
        &self,
        request: Request<ListLevelTargetsRequest>,
    ) -> Result<Response<ListLevelTargetsResponse>, Status> {
        authorize(&request, DESK)?;
        let mut conn = self.pool.acquire().await.map_err(internal)?;
        let rows = store::level_targets(&mut conn).await.map_err(internal)?;
        let mut levels: Vec<pb::LevelTargets> = Vec::new();
        for (level, target) in rows {
            let target = target_message(target);
            match levels.last_mut() {
                Some(last) if last.level == level => last.targets.push(target),
                _ => levels.push(pb::LevelTargets {
                    level,
                    targets: vec![target],
                }),
            }
        }
        Ok(Response::new(ListLevelTargetsResponse { levels }))
    }
}
