//! `hotline.admin.v1.DeadLetterService`: the dead letters of the services
//! this process runs, listed and replayed, by admins only. The supervisor
//! serves it once per process, answering for each consuming module's
//! schema; with a split deployment the caller asks the process that runs
//! the service.

use hotline_proto::admin::v1::{
    self as pb, ListDeadLettersRequest, ListDeadLettersResponse, ReplayDeadLettersRequest,
    ReplayDeadLettersResponse, dead_letter_service_server::DeadLetterService,
    replay_dead_letters_request::Which as WhichProto,
};
use sqlx::PgPool;
use tonic::{Request, Response, Status};

use crate::{
    auth::{Role, authorize},
    bus::dead_letters::{self, DeadLetter, Which},
    time::timestamp,
};

/// Only admins see and replay dead letters.
const ADMINS: &[Role] = &[Role::Admin];

const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 500;

pub struct DeadLetterApi {
    /// Each consuming service of this process and its schema's pool.
    services: Vec<(&'static str, PgPool)>,
}

impl DeadLetterApi {
    pub fn new(services: Vec<(&'static str, PgPool)>) -> Self {
        Self { services }
    }

    /// The services a request names: one, or all when `name` is empty.
    fn services(&self, name: &str) -> Result<Vec<&(&'static str, PgPool)>, Status> {
        if name.is_empty() {
            return Ok(self.services.iter().collect());
        }
        match self.services.iter().find(|(service, _)| *service == name) {
            Some(service) => Ok(vec![service]),
            None => {
                let here: Vec<&str> = self.services.iter().map(|(s, _)| *s).collect();
                Err(Status::not_found(format!(
                    "this process runs no consumer {name:?} (it runs: {}); \
                     ask the process that does (HOTLINE_SERVER)",
                    here.join(", ")
                )))
            }
        }
    }
}

fn internal(error: impl std::fmt::Display) -> Status {
    tracing::error!(%error, "dead-letter request failed");
    Status::internal("the dead letters could not be read or replayed")
}

fn message(service: &str, letter: &DeadLetter) -> pb::DeadLetter {
    pb::DeadLetter {
        id: letter.id,
        service: service.to_owned(),
        event_id: letter.event_id.map(|id| id.to_string()).unwrap_or_default(),
        event_type: letter.event_type.clone(),
        ticket_id: letter.ticket_id.clone().unwrap_or_default(),
        error: letter.error.clone(),
        attempts: letter.attempts,
        dead_lettered_at: Some(timestamp(letter.dead_lettered_at)),
        replayed_at: letter.replayed_at.map(timestamp),
        replayed_by: letter.replayed_by.clone().unwrap_or_default(),
    }
}

#[tonic::async_trait]
impl DeadLetterService for DeadLetterApi {
    async fn list_dead_letters(
        &self,
        request: Request<ListDeadLettersRequest>,
    ) -> Result<Response<ListDeadLettersResponse>, Status> {
        authorize(&request, ADMINS)?;
        let request = request.into_inner();
        let limit = match request.limit {
            0 => DEFAULT_LIMIT,
            n => n.min(MAX_LIMIT),
        };
        let mut listed = Vec::new();
        for (service, pool) in self.services(&request.service)? {
            let letters = dead_letters::list(pool, request.include_replayed, i64::from(limit))
                .await
                .map_err(internal)?;
            listed.extend(letters.iter().map(|letter| message(service, letter)));
        }
        // Newest first across services, as within one.
        listed.sort_by_key(|letter| {
            std::cmp::Reverse(
                letter
                    .dead_lettered_at
                    .as_ref()
                    .map(|at| (at.seconds, at.nanos)),
            )
        });
        listed.truncate(limit as usize);
        Ok(Response::new(ListDeadLettersResponse {
            dead_letters: listed,
        }))
    }

    async fn replay_dead_letters(
        &self,
        request: Request<ReplayDeadLettersRequest>,
    ) -> Result<Response<ReplayDeadLettersResponse>, Status> {
        let caller = authorize(&request, ADMINS)?;
        let request = request.into_inner();
        let which = match request.which {
            Some(WhichProto::Id(id)) => Which::One(id),
            Some(WhichProto::All(true)) => Which::All,
            _ => {
                return Err(Status::invalid_argument(
                    "name a dead letter by id, or ask for all",
                ));
            }
        };
        let mut services = self.services(&request.service)?;
        if let Which::One(id) = which {
            // Ids are numbered per service: without a service, the one that
            // holds this id.
            let mut holding = Vec::new();
            for service in services {
                if dead_letters::exists(&service.1, id)
                    .await
                    .map_err(internal)?
                {
                    holding.push(service);
                }
            }
            if holding.len() > 1 {
                let names: Vec<&str> = holding.iter().map(|(s, _)| *s).collect();
                return Err(Status::invalid_argument(format!(
                    "dead letter {id} exists in {}: name the service",
                    names.join(" and ")
                )));
            }
            services = holding;
        }
        let mut response = ReplayDeadLettersResponse::default();
        let mut found = false;
        for (service, pool) in services {
            let outcome = dead_letters::replay(pool, service, which, &caller.subject)
                .await
                .map_err(internal)?;
            let Some(outcome) = outcome else { continue };
            found = true;
            if !outcome.replayed.is_empty() {
                tracing::info!(
                    service,
                    replayed = outcome.replayed.len(),
                    by = %caller.subject,
                    "dead letters replayed"
                );
                if let Err(error) = dead_letters::refresh_gauge(pool, service).await {
                    tracing::warn!(error = format!("{error:#}"), "dead letters not counted");
                }
            }
            let replayed = outcome.replayed.iter().map(|l| message(service, l));
            response.replayed.extend(replayed);
            let already = outcome.already.iter().map(|l| message(service, l));
            response.already_replayed.extend(already);
        }
        if let Which::One(id) = which
            && !found
        {
            return Err(Status::not_found(format!("no dead letter {id}")));
        }
        Ok(Response::new(response))
    }
}
