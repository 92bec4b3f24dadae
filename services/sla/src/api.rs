//! `hotline.sla.v1.SlaService` over gRPC.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use hotline_kit::{
    auth::{Role, authorize},
    time::timestamp,
};
use hotline_proto::{
    sla::v1::{
        self as pb, AcknowledgeRequest, ClockState, DeletePolicyRequest, GetClockRequest,
        ListAtRiskRequest, ListBreachedRequest, ListClocksResponse, ListPoliciesRequest,
        ListPoliciesResponse, SetPolicyRequest, sla_service_server::SlaService,
    },
    tickets::v1::Priority,
};
use sqlx::PgPool;
use tonic::{Request, Response, Status};

use crate::{
    domain::{AckError, Clock, Ladder, State},
    index::DueIndex,
    store,
};

/// Who may read clocks and acknowledge breaches: the desk and whoever is
/// on call.
const DESK: &[Role] = &[
    Role::Agent,
    Role::Dispatcher,
    Role::Manager,
    Role::Technician,
];
/// Who may change the promise.
const MANAGERS: &[Role] = &[Role::Manager];

const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 500;

pub struct SlaApi {
    pool: PgPool,
    index: Arc<DueIndex>,
    ladder: Ladder,
    warranty: Duration,
}

impl SlaApi {
    pub fn new(pool: PgPool, index: Arc<DueIndex>, ladder: Ladder, warranty: Duration) -> Self {
        Self {
            pool,
            index,
            ladder,
            warranty,
        }
    }

    fn clock(&self, clock: &Clock) -> pb::Clock {
        pb::Clock {
            ticket_id: clock.ticket_id.to_string(),
            number: clock.number.clone(),
            subject: clock.subject.clone(),
            contact: clock.contact.clone(),
            channel: clock.channel,
            priority: clock.priority,
            state: match clock.state() {
                State::Running => ClockState::Running,
                State::Breached => ClockState::Breached,
                State::Stopped => ClockState::Stopped,
            } as i32,
            awaiting_since: clock.awaiting_since.map(timestamp),
            target: proto_duration(clock.target),
            due: clock.due.map(timestamp),
            breaches: clock.breaches,
            breached_at: clock.breached_at.map(timestamp),
            level: clock.level(&self.ladder),
            next_escalation_at: clock
                .next_at
                .filter(|_| clock.breached_at.is_some())
                .map(timestamp),
            acknowledged_at: clock.acknowledged_at.map(timestamp),
            acknowledged_by: clock.acknowledged_by.clone().unwrap_or_default(),
            last_outcome: clock.last_outcome.clone().unwrap_or_default(),
            last_stopped_at: clock.last_stopped_at.map(timestamp),
        }
    }

    async fn policies(&self) -> Result<ListPoliciesResponse, Status> {
        let set = store::policies(&self.pool).await.map_err(internal)?;
        let policies = [
            Priority::Low,
            Priority::Normal,
            Priority::High,
            Priority::Urgent,
        ]
        .into_iter()
        .map(|priority| {
            let custom = set.iter().find(|(p, _)| *p == priority as i32);
            pb::Policy {
                priority: priority as i32,
                target: proto_duration(custom.map_or(self.warranty, |(_, target)| *target)),
                custom: custom.is_some(),
            }
        })
        .collect();
        Ok(ListPoliciesResponse { policies })
    }
}

fn proto_duration(duration: Duration) -> Option<prost_types::Duration> {
    prost_types::Duration::try_from(duration).ok()
}

fn std_duration(duration: Option<&prost_types::Duration>) -> Result<Option<Duration>, Status> {
    duration
        .map(|d| {
            Duration::try_from(*d)
                .map_err(|_| Status::invalid_argument("a duration must not be negative"))
        })
        .transpose()
}

fn limit(requested: u32) -> i64 {
    i64::from(match requested {
        0 => DEFAULT_LIMIT,
        n => n.min(MAX_LIMIT),
    })
}

fn internal(error: impl std::fmt::Display) -> Status {
    tracing::error!(%error, "sla request failed");
    Status::internal("the sla service could not complete the request")
}

fn priority(value: i32) -> Result<i32, Status> {
    match Priority::try_from(value) {
        Ok(Priority::Unspecified) | Err(_) => Err(Status::invalid_argument(
            "priority must be low, normal, high or urgent",
        )),
        Ok(priority) => Ok(priority as i32),
    }
}

#[tonic::async_trait]
impl SlaService for SlaApi {
    async fn get_clock(
        &self,
        request: Request<GetClockRequest>,
    ) -> Result<Response<pb::Clock>, Status> {
        authorize(&request, DESK)?;
        let ticket = &request.get_ref().ticket;
        let clock = store::find(&self.pool, ticket)
            .await
            .map_err(internal)?
            .ok_or_else(|| Status::not_found(format!("no clock for ticket {ticket:?}")))?;
        Ok(Response::new(self.clock(&clock)))
    }

    async fn list_at_risk(
        &self,
        request: Request<ListAtRiskRequest>,
    ) -> Result<Response<ListClocksResponse>, Status> {
        authorize(&request, DESK)?;
        let request = request.get_ref();
        let within = std_duration(request.within.as_ref())?
            .filter(|d| !d.is_zero())
            .unwrap_or(Duration::from_secs(30 * 60));
        let until = chrono::Duration::from_std(within)
            .ok()
            .and_then(|within| Utc::now().checked_add_signed(within))
            .ok_or_else(|| Status::invalid_argument("within is too long"))?;
        let clocks = store::at_risk(&self.pool, until, limit(request.limit))
            .await
            .map_err(internal)?;
        Ok(Response::new(ListClocksResponse {
            clocks: clocks.iter().map(|c| self.clock(c)).collect(),
        }))
    }

    async fn list_breached(
        &self,
        request: Request<ListBreachedRequest>,
    ) -> Result<Response<ListClocksResponse>, Status> {
        authorize(&request, DESK)?;
        let clocks = store::breached(&self.pool, limit(request.get_ref().limit))
            .await
            .map_err(internal)?;
        Ok(Response::new(ListClocksResponse {
            clocks: clocks.iter().map(|c| self.clock(c)).collect(),
        }))
    }

    async fn acknowledge(
        &self,
        request: Request<AcknowledgeRequest>,
    ) -> Result<Response<pb::Clock>, Status> {
        let caller = authorize(&request, DESK)?;
        let ticket = &request.get_ref().ticket;
        let found = store::find(&self.pool, ticket)
            .await
            .map_err(internal)?
            .ok_or_else(|| Status::not_found(format!("no clock for ticket {ticket:?}")))?;
        let mut tx = self.pool.begin().await.map_err(internal)?;
        let mut clock = store::lock(&mut tx, found.ticket_id)
            .await
            .map_err(internal)?
            .unwrap_or(found);
        match clock.acknowledge(&caller.subject, Utc::now()) {
            Ok(true) => {
                store::save(&mut tx, &clock).await.map_err(internal)?;
                self.index.set(clock.ticket_id, clock.next_at).await;
                tx.commit().await.map_err(internal)?;
            }
            Ok(false) => {}
            Err(error @ AckError::NotBreached(_)) => {
                return Err(Status::failed_precondition(error.to_string()));
            }
        }
        Ok(Response::new(self.clock(&clock)))
    }

    async fn list_policies(
        &self,
        request: Request<ListPoliciesRequest>,
    ) -> Result<Response<ListPoliciesResponse>, Status> {
        authorize(&request, DESK)?;
        Ok(Response::new(self.policies().await?))
    }

    async fn set_policy(
        &self,
        request: Request<SetPolicyRequest>,
    ) -> Result<Response<pb::Policy>, Status> {
        let caller = authorize(&request, MANAGERS)?;
        let request = request.get_ref();
        let priority = priority(request.priority)?;
        let target = std_duration(request.target.as_ref())?
            .filter(|d| !d.is_zero())
            .ok_or_else(|| Status::invalid_argument("target must be a positive duration"))?;
        if target > self.warranty {
            return Err(Status::invalid_argument(format!(
                "target {}s is weaker than the warranty target {}s: no customer gets less than warranty",
                target.as_secs(),
                self.warranty.as_secs()
            )));
        }
        store::set_policy(&self.pool, priority, target, &caller.subject)
            .await
            .map_err(internal)?;
        Ok(Response::new(pb::Policy {
            priority,
            target: proto_duration(target),
            custom: true,
        }))
    }

    async fn delete_policy(
        &self,
        request: Request<DeletePolicyRequest>,
    ) -> Result<Response<ListPoliciesResponse>, Status> {
        authorize(&request, MANAGERS)?;
        let priority = priority(request.get_ref().priority)?;
        store::delete_policy(&self.pool, priority)
            .await
            .map_err(internal)?;
        Ok(Response::new(self.policies().await?))
    }
}
