//! `hotline.dispatch.v1.DispatchService`: checks each caller's role and
//! each field, asks the store, and answers people with their presence as
//! it is now (stated, and alive in Redis) and the awaiting tickets they
//! have; shows routing's queue and its last decision on a ticket.

use std::sync::Arc;

use chrono::Utc;
use hotline_kit::grpc::store_failed;
use hotline_kit::time::timestamp;

use hotline_kit::{
    auth::{Caller, Role, authorize},
    bus::outbox::OutboxSignal,
    input::{self, line},
    phone,
};
use hotline_proto::dispatch::v1::{self as pb, dispatch_service_server::DispatchService};
use sqlx::PgPool;
use tonic::{Request, Response, Status};

use crate::{
    domain::{self, Change, Presence, Profile},
    events,
    presence::Liveness,
    router::Router,
    routing::{self, Needs, Priority},
    store::{self, Filter, Person, StoreError},
};

/// Who reads the directory: anyone with a valid token.
const READERS: &[Role] = &Role::ALL;
/// Who changes it (admin always passes): who works the desk is a
/// manager's decision.
const WRITERS: &[Role] = &[Role::Manager];
/// Who may set another person's presence (a colleague who left without
/// signing off).
const PRESENCE_KEEPERS: &[Role] = &[Role::Dispatcher, Role::Manager];

const MAX_NAME_CHARS: usize = 200;
const MAX_EMAIL_CHARS: usize = 254;
const MAX_PHONE_CHARS: usize = 40;
/// Teams, regions, time zones, one skill, a person reference.
const MAX_SHORT_CHARS: usize = 100;
const DEFAULT_LIMIT: u32 = 1000;
const MAX_LIMIT: u32 = 10_000;
/// Tickets `ListQueue` shows unless asked for more.
const DEFAULT_QUEUE: u32 = 100;

pub struct DispatchApi {
    pool: PgPool,
    liveness: Arc<Liveness>,
    /// For people's national phone numbers: the desk's (`intake.country_code`).
    country_code: String,
    /// Woken after each write: its events are in the outbox.
    relay: OutboxSignal,
    /// Woken when someone states a presence or beats; its settings and
    /// targets order the queue shown.
    router: Arc<Router>,
}

impl DispatchApi {
    pub fn new(
        pool: PgPool,
        liveness: Arc<Liveness>,
        country_code: String,
        relay: OutboxSignal,
        router: Arc<Router>,
    ) -> Self {
        Self {
            pool,
            liveness,
            country_code,
            relay,
            router,
        }
    }

    /// `person` with their presence and awaiting tickets as they are now.
    async fn shown(&self, person: &Person) -> Result<pb::Person, Status> {
        let alive = self.liveness.alive_or_offline(&[person.id]).await;
        let assigned = self.assigned(std::slice::from_ref(person)).await?;
        Ok(events::shown(
            person,
            alive.first().copied().unwrap_or(false),
            assigned.first().copied().unwrap_or(0),
        ))
    }

    /// The awaiting tickets each of `people` has, in one query.
    async fn assigned(&self, people: &[Person]) -> Result<Vec<u32>, Status> {
        let emails: Vec<String> = people
            .iter()
            .map(|p| p.profile.email.to_lowercase())
            .collect();
        store::assigned_to(&self.pool, &emails)
            .await
            .map_err(status)
    }

    async fn person(&self, reference: &str) -> Result<Person, Status> {
        let mut conn = self.pool.acquire().await.map_err(|e| status(e.into()))?;
        store::person(&mut conn, reference).await.map_err(status)
    }

    /// The caller's own entry: the person whose email is the token's subject.
    async fn own(&self, caller: &Caller) -> Result<Person, Status> {
        match self.person(&caller.subject).await {
            Err(status) if status.code() == tonic::Code::NotFound => {
                Err(Status::not_found(format!(
                    "no person has the email {:?} your token names: a manager adds you with \
                 hotline people add, and your token's subject must be that email",
                    caller.subject
                )))
            }
            other => other,
        }
    }

    fn phone(&self, value: &str) -> Result<Option<String>, Status> {
        let Some(raw) = line(value, "phone", MAX_PHONE_CHARS)? else {
            return Ok(None);
        };
        match phone::normalise(&raw, &self.country_code) {
            Some(e164) => Ok(Some(e164)),
            None => Err(Status::invalid_argument(format!(
                "phone {raw:?} is not a phone number: write it in international form, like +49 30 1234567"
            ))),
        }
    }
}

fn status(error: StoreError) -> Status {
    match error {
        StoreError::NotFound(why) => Status::not_found(why),
        StoreError::Clash(why) => Status::already_exists(why),
        StoreError::Invalid(why) => Status::invalid_argument(why),
        StoreError::Refused(why) => Status::failed_precondition(why),
        StoreError::Database(error) => store_failed("the directory", &error.into()),
        StoreError::Outbox(error) => store_failed("the directory", &error),
    }
}

/// Redis could not keep a heartbeat: the caller must try again.
fn unkept(error: anyhow::Error) -> Status {
    tracing::warn!(error = format!("{error:#}"), "heartbeat not kept");
    Status::unavailable("presence cannot be kept now (Redis is unreachable); retry shortly")
}

fn invalid(why: String) -> Status {
    Status::invalid_argument(why)
}

fn required(value: &str, name: &str, max: usize) -> Result<String, Status> {
    line(value, name, max)?.ok_or_else(|| Status::invalid_argument(format!("give the {name}")))
}

fn email(value: &str) -> Result<String, Status> {
    let value = required(value, "email", MAX_EMAIL_CHARS)?;
    input::email(&value).map_err(|why| invalid(format!("email: {why}")))
}

/// Each of `values` a checked line, at most `most` of them.
fn lines(values: &[String], name: &str, most: usize) -> Result<Vec<String>, Status> {
    if values.len() > most {
        return Err(invalid(format!("give at most {most} {name}")));
    }
    values
        .iter()
        .filter_map(|v| line(v, name, MAX_SHORT_CHARS).transpose())
        .collect()
}

fn roles(values: &[String]) -> Result<Vec<Role>, Status> {
    domain::roles(&lines(values, "roles", domain::PERSON_ROLES.len() * 4)?).map_err(invalid)
}

fn skills(values: &[String]) -> Result<Vec<domain::Skill>, Status> {
    domain::skills(&lines(values, "skills", domain::MAX_SKILLS)?).map_err(invalid)
}

fn regions(values: &[String]) -> Result<Vec<String>, Status> {
    domain::regions(&lines(values, "regions", domain::MAX_REGIONS)?).map_err(invalid)
}

fn time_zone(value: &str) -> Result<Option<String>, Status> {
    line(value, "time_zone", MAX_SHORT_CHARS)?
        .map(|tz| domain::time_zone(&tz).map_err(invalid))
        .transpose()
}

fn presence(value: i32) -> Result<Presence, Status> {
    match pb::Presence::try_from(value) {
        Ok(pb::Presence::Online) => Ok(Presence::Online),
        Ok(pb::Presence::Away) => Ok(Presence::Away),
        Ok(pb::Presence::Offline) => Ok(Presence::Offline),
        _ => Err(invalid(
            "give the presence: online, away or offline".to_owned(),
        )),
    }
}

impl DispatchApi {
    fn profile(&self, request: &pb::AddPersonRequest) -> Result<Profile, Status> {
        let profile = Profile {
            name: required(&request.name, "name", MAX_NAME_CHARS)?,
            email: email(&request.email)?,
            phone: self.phone(&request.phone)?,
            roles: roles(&request.roles)?,
            team: line(&request.team, "team", MAX_SHORT_CHARS)?,
            skills: skills(&request.skills)?,
            regions: regions(&request.regions)?,
            capacity: domain::capacity(request.capacity.unwrap_or(domain::DEFAULT_CAPACITY))
                .map_err(invalid)?,
            home: domain::home(request.home_lat, request.home_lng).map_err(invalid)?,
            time_zone: time_zone(&request.time_zone)?,
        };
        profile.check().map_err(invalid)?;
        Ok(profile)
    }

    fn change(&self, request: &pb::UpdatePersonRequest) -> Result<Change, Status> {
        let home = match (request.clear_home, request.home_lat, request.home_lng) {
            (true, None, None) => Some(None),
            (true, _, _) => {
                return Err(invalid(
                    "either clear the home base or give a new one, not both".to_owned(),
                ));
            }
            (false, None, None) => None,
            (false, lat, lng) => Some(domain::home(lat, lng).map_err(invalid)?),
        };
        Ok(Change {
            name: request
                .name
                .as_deref()
                .map(|n| required(n, "name", MAX_NAME_CHARS))
                .transpose()?,
            email: request.email.as_deref().map(email).transpose()?,
            phone: request
                .phone
                .as_deref()
                .map(|p| self.phone(p))
                .transpose()?,
            roles: request
                .roles
                .as_ref()
                .map(|r| roles(&r.values))
                .transpose()?,
            team: request
                .team
                .as_deref()
                .map(|t| line(t, "team", MAX_SHORT_CHARS))
                .transpose()?,
            skills: request
                .skills
                .as_ref()
                .map(|s| skills(&s.values))
                .transpose()?,
            regions: request
                .regions
                .as_ref()
                .map(|r| regions(&r.values))
                .transpose()?,
            capacity: request
                .capacity
                .map(|c| domain::capacity(c).map_err(invalid))
                .transpose()?,
            home,
            time_zone: request.time_zone.as_deref().map(time_zone).transpose()?,
        })
    }
}

/// A person reference: an id or an email.
fn reference(value: &str) -> Result<String, Status> {
    required(value, "person (an id or an email)", MAX_EMAIL_CHARS)
}

#[tonic::async_trait]
impl DispatchService for DispatchApi {
    async fn add_person(
        &self,
        request: Request<pb::AddPersonRequest>,
    ) -> Result<Response<pb::Person>, Status> {
        authorize(&request, WRITERS)?;
        let profile = self.profile(request.get_ref())?;
        let person = store::add(&self.pool, &profile).await.map_err(status)?;
        self.relay.committed();
        Ok(Response::new(events::person(&person, false)))
    }

    async fn update_person(
        &self,
        request: Request<pb::UpdatePersonRequest>,
    ) -> Result<Response<pb::Person>, Status> {
        authorize(&request, WRITERS)?;
        let reference = reference(&request.get_ref().person)?;
        let change = self.change(request.get_ref())?;
        let liveness = &self.liveness;
        let person = store::update(&self.pool, &reference, change, async |id| {
            liveness
                .alive_or_offline(&[id])
                .await
                .first()
                .copied()
                .unwrap_or(false)
        })
        .await
        .map_err(status)?;
        self.relay.committed();
        // A new capacity, skill or region may let someone take a ticket.
        self.router.wake();
        Ok(Response::new(self.shown(&person).await?))
    }

    async fn deactivate_person(
        &self,
        request: Request<pb::DeactivatePersonRequest>,
    ) -> Result<Response<pb::Person>, Status> {
        authorize(&request, WRITERS)?;
        let reference = reference(&request.get_ref().person)?;
        let (person, changed) = store::deactivate(&self.pool, &reference)
            .await
            .map_err(status)?;
        if changed {
            self.relay.committed();
            // Their grace starts: the router's next deadline may be theirs.
            self.router.wake();
            // Offline whatever Redis says: a deactivated person reads
            // offline anyway, so a failure here only leaves a key to expire.
            if let Err(error) = self.liveness.end(person.id).await {
                tracing::warn!(error = format!("{error:#}"), "heartbeat left to expire");
            }
        }
        Ok(Response::new(events::person(&person, false)))
    }

    async fn get_person(
        &self,
        request: Request<pb::GetPersonRequest>,
    ) -> Result<Response<pb::Person>, Status> {
        authorize(&request, READERS)?;
        let person = self.person(&reference(&request.get_ref().person)?).await?;
        Ok(Response::new(self.shown(&person).await?))
    }

    async fn list_people(
        &self,
        request: Request<pb::ListPeopleRequest>,
    ) -> Result<Response<pb::ListPeopleResponse>, Status> {
        authorize(&request, READERS)?;
        let asked = request.get_ref();
        let role = line(&asked.role, "role", MAX_SHORT_CHARS)?
            .map(|r| domain::role(&r).map_err(invalid))
            .transpose()?;
        let limit = match asked.limit {
            0 => DEFAULT_LIMIT,
            n if n <= MAX_LIMIT => n,
            n => {
                return Err(invalid(format!(
                    "limit {n} is too high: at most {MAX_LIMIT}"
                )));
            }
        };
        let filter = Filter {
            role,
            // Online now needs online stated; the heartbeat is checked below,
            // so the limit applies after it.
            stated: asked.online.then_some(Presence::Online),
            include_inactive: asked.include_inactive,
            limit: (!asked.online).then_some(limit),
        };
        let people = store::list(&self.pool, &filter).await.map_err(status)?;
        let ids: Vec<_> = people.iter().map(|p| p.id).collect();
        let alive = self.liveness.alive_or_offline(&ids).await;
        let assigned = self.assigned(&people).await?;
        let people = people
            .iter()
            .zip(alive)
            .zip(assigned)
            .map(|((person, alive), assigned)| events::shown(person, alive, assigned))
            .filter(|p| !asked.online || p.presence == pb::Presence::Online as i32)
            .take(limit as usize)
            .collect();
        Ok(Response::new(pb::ListPeopleResponse { people }))
    }

    async fn set_presence(
        &self,
        request: Request<pb::SetPresenceRequest>,
    ) -> Result<Response<pb::Person>, Status> {
        let caller = authorize(&request, READERS)?;
        let presence = presence(request.get_ref().presence)?;
        let named = line(&request.get_ref().person, "person", MAX_EMAIL_CHARS)?;
        let person = match named {
            None => self.own(&caller).await?,
            Some(reference) => self.person(&reference).await?,
        };
        let own = person
            .profile
            .email
            .eq_ignore_ascii_case(caller.subject.trim());
        if !own {
            authorize(&request, PRESENCE_KEEPERS).map_err(|_| {
                Status::permission_denied(format!(
                    "{} may set only their own presence: setting {}'s needs the role dispatcher or manager",
                    caller.subject, person.profile.email
                ))
            })?;
        }
        if !person.active {
            return Err(Status::failed_precondition(format!(
                "{} is deactivated: a deactivated person has no presence",
                person.profile.email
            )));
        }
        // The heartbeat first, so that the event written with the new
        // presence never announces one that does not hold.
        match presence {
            Presence::Offline => self.liveness.end(person.id).await,
            Presence::Online | Presence::Away => self.liveness.beat(person.id).await,
        }
        .map_err(unkept)?;
        let (person, previous) = store::set_presence(&self.pool, person.id, presence)
            .await
            .map_err(status)?;
        if previous != presence {
            self.relay.committed();
        }
        // Online: they may take tickets now. Away or offline: their grace
        // starts, and the router's next deadline is theirs.
        self.router.wake();
        Ok(Response::new(self.shown(&person).await?))
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::Person>, Status> {
        let caller = authorize(&request, READERS)?;
        let person = self.own(&caller).await?;
        if !person.active {
            return Err(Status::failed_precondition(format!(
                "{} is deactivated: a deactivated person has no presence",
                person.profile.email
            )));
        }
        self.liveness.beat(person.id).await.map_err(unkept)?;
        // Back before their tickets moved: the lapse is forgotten.
        if store::back(&self.pool, person.id).await.map_err(status)? {
            tracing::info!(person = %person.profile.email, "heartbeat back after a lapse");
        }
        if person.presence == Presence::Online {
            self.router.wake();
        }
        Ok(Response::new(events::person(&person, true)))
    }

    async fn list_queue(
        &self,
        request: Request<pb::ListQueueRequest>,
    ) -> Result<Response<pb::ListQueueResponse>, Status> {
        authorize(&request, READERS)?;
        let limit = match request.get_ref().limit {
            0 => DEFAULT_QUEUE,
            n if n <= MAX_LIMIT => n,
            n => {
                return Err(invalid(format!(
                    "limit {n} is too high: at most {MAX_LIMIT}"
                )));
            }
        };
        let targets = self.router.targets();
        let settings = &self.router.settings;
        let (queued, total) = store::queue(
            &self.pool,
            &targets,
            Utc::now(),
            settings.grace,
            i64::from(limit),
        )
        .await
        .map_err(status)?;
        let tickets = queued
            .into_iter()
            .map(|q| {
                let priority: Priority = q.priority.parse().unwrap_or(Priority::Normal);
                let needs = Needs::of(
                    q.family.as_deref(),
                    q.region.as_deref(),
                    &settings.family_skills,
                );
                let reason = match (&q.assigning_to, &q.reason) {
                    (Some(to), _) => format!("being assigned to {to}"),
                    (None, Some(why)) => why.clone(),
                    (None, None) if !q.entitled => {
                        routing::awaiting_entitlement(crate::router::ENTITLEMENT_WAIT)
                    }
                    (None, None) => "not routed yet".to_owned(),
                };
                pb::QueuedTicket {
                    ticket_id: q.id.to_string(),
                    number: q.number,
                    priority: priority.as_str().to_owned(),
                    awaiting_since: Some(timestamp(q.awaiting_since)),
                    due: Some(timestamp(targets.due(priority, q.awaiting_since))),
                    skills: needs.skills,
                    region: needs.region.unwrap_or_default(),
                    reason,
                    moving_from: q.assignee.unwrap_or_default(),
                    queued_at: q.queued_at.map(timestamp),
                }
            })
            .collect();
        Ok(Response::new(pb::ListQueueResponse { tickets, total }))
    }

    async fn explain_ticket(
        &self,
        request: Request<pb::ExplainTicketRequest>,
    ) -> Result<Response<pb::Decision>, Status> {
        authorize(&request, READERS)?;
        let reference = required(
            &request.get_ref().ticket,
            "ticket (an id or a number like HL-10001)",
            MAX_SHORT_CHARS,
        )?;
        let (decision, decided_at, waiting) = store::decision(&self.pool, &reference)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::Decision {
            ticket_id: decision.ticket_id.to_string(),
            number: decision.number,
            decided_at: Some(timestamp(decided_at)),
            assignee: decision.assignee.unwrap_or_default(),
            reason: decision.reason,
            skills: decision.skills,
            region: decision.region.unwrap_or_default(),
            moved_from: decision.moved_from.unwrap_or_default(),
            overflow: decision.overflow,
            waiting,
        }))
    }
}
