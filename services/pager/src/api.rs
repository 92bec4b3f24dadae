//! `hotline.pager.v1.PagerService` over gRPC.

use std::{collections::HashMap, time::Duration};

use chrono::Utc;
use hotline_kit::{
    auth::{Role, authorize},
    bus::outbox::OutboxSignal,
    grpc::ServiceToken,
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
/// Who may change who gets woken.
const PLANNERS: &[Role] = &[Role::Dispatcher, Role::Manager];

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

fn check_url(url: &str) -> Result<(), Status> {
    if url.is_empty() || url.starts_with("https://") || url.starts_with("http://") {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "webhook_url {url:?} must be an http(s) URL"
        )))
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
        let on_call = schedules
            .iter()
            .map(|schedule| {
                let now = schedule.rotation.on_call(&schedule.overrides, at);
                pb::OnCall {
                    schedule: schedule.name.clone(),
                    person: now.as_ref().map(|o| o.person.clone()).unwrap_or_default(),
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
        authorize(&request, PLANNERS)?;
        let person = request.into_inner();
        let name = required(&person.name, "name")?;
        if name == "pagerduty" || name == "webhook" {
            return Err(Status::invalid_argument(format!(
                "{name:?} names the configured {name} target; choose another name"
            )));
        }
        check_url(person.webhook_url.trim())?;
        let stored = store::Person {
            name,
            email: person.email.trim().to_owned(),
            webhook_url: person.webhook_url.trim().to_owned(),
        };
        store::put_person(&self.pool, &stored)
            .await
            .map_err(internal)?;
        Ok(Response::new(pb::Person {
            name: stored.name,
            email: stored.email,
            webhook_url: stored.webhook_url,
        }))
    }

    async fn list_people(
        &self,
        request: Request<ListPeopleRequest>,
    ) -> Result<Response<ListPeopleResponse>, Status> {
        authorize(&request, DESK)?;
        let mut conn = self.pool.acquire().await.map_err(internal)?;
        let people = store::people(&mut conn)
            .await
            .map_err(internal)?
            .into_iter()
            .map(|p| pb::Person {
                name: p.name,
                email: p.email,
                webhook_url: p.webhook_url,
            })
            .collect();
        Ok(Response::new(ListPeopleResponse { people }))
    }

    async fn put_schedule(
        &self,
        request: Request<pb::Schedule>,
    ) -> Result<Response<pb::Schedule>, Status> {
        authorize(&request, PLANNERS)?;
        let schedule = request.into_inner();
        let name = required(&schedule.name, "name")?;
        let shift = schedule
            .shift_length
            .and_then(|d| Duration::try_from(d).ok())
            .filter(|d| (Duration::from_secs(60)..=Duration::from_secs(366 * 86_400)).contains(d))
            .ok_or_else(|| {
                Status::invalid_argument("shift_length must be between a minute and a year")
            })?;
        if schedule.participants.iter().any(|p| p.trim().is_empty()) {
            return Err(Status::invalid_argument("a participant needs a name"));
        }
        let rotation = store::rotation(
            schedule.time_zone.trim(),
            schedule.participants.clone(),
            shift,
            schedule.starts.trim(),
        )
        .map_err(Status::invalid_argument)?;
        store::put_schedule(&self.pool, &name, &rotation)
            .await
            .map_err(internal)?;
        Ok(Response::new(pb::Schedule { name, ..schedule }))
    }

    async fn list_schedules(
        &self,
        request: Request<ListSchedulesRequest>,
    ) -> Result<Response<ListSchedulesResponse>, Status> {
        authorize(&request, DESK)?;
        let mut conn = self.pool.acquire().await.map_err(internal)?;
        let schedules = store::schedules(&mut conn)
            .await
            .map_err(internal)?
            .into_iter()
            .map(|s| pb::Schedule {
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
        authorize(&request, PLANNERS)?;
        let taken = request.into_inner();
        let (Some(starts_at), Some(ends_at)) = (
            taken.starts_at.as_ref().and_then(from_timestamp),
            taken.ends_at.as_ref().and_then(from_timestamp),
        ) else {
            return Err(Status::invalid_argument(
                "starts_at and ends_at are required",
            ));
        };
        if ends_at <= starts_at {
            return Err(Status::invalid_argument(
                "an override must end after it starts",
            ));
        }
        let person = required(&taken.person, "person")?;
        let schedule = required(&taken.schedule, "schedule")?;
        let added = store::add_override(
            &self.pool,
            &schedule,
            &Override {
                person,
                starts_at,
                ends_at,
            },
        )
        .await
        .map_err(internal)?;
        if !added {
            return Err(Status::not_found(format!("no schedule {schedule:?}")));
        }
        Ok(Response::new(taken))
    }

    async fn set_level_targets(
        &self,
        request: Request<pb::LevelTargets>,
    ) -> Result<Response<pb::LevelTargets>, Status> {
        authorize(&request, PLANNERS)?;
        let levels = request.into_inner();
        if levels.level < 1 {
            return Err(Status::invalid_argument("levels start at 1"));
        }
        let targets = levels
            .targets
            .iter()
            .map(|t| match &t.target {
                Some(target::Target::Schedule(name)) => {
                    required(name, "a schedule target's name").map(Target::Schedule)
                }
                Some(target::Target::Person(name)) => {
                    required(name, "a person target's name").map(Target::Person)
                }
                None => Err(Status::invalid_argument(
                    "a target is a schedule or a person",
                )),
            })
            .collect::<Result<Vec<_>, _>>()?;
        store::set_level_targets(&self.pool, levels.level, &targets)
            .await
            .map_err(internal)?;
        Ok(Response::new(levels))
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
            let target = pb::Target {
                target: Some(match target {
                    Target::Schedule(name) => target::Target::Schedule(name),
                    Target::Person(name) => target::Target::Person(name),
                }),
            };
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
