//! `dispatch`: who works the desk, who is there, and who gets each ticket
//! awaiting a response (ARCHITECTURE §13).
//!
//! - [`domain`]: the rules, pure: roles, skills with levels (`nvr:3`,
//!   `lang:de`), regions, capacity, a technician's home base and time
//!   zone, what a partial update changes, presence stated and effective.
//! - [`store`]: the only SQL: the directory of people with their skills
//!   and stated presence; each write with its event in the outbox.
//! - [`presence`]: liveness, one Redis key per person with a time-to-live
//!   that heartbeats renew.
//! - [`routing`]: routing's rules, pure: what a ticket needs, the queue's
//!   order (SLA due, priority, age), who may take a ticket, whom it goes
//!   to, and why nobody, in words.
//! - [`router`]: the rounds that place tickets and move those of people
//!   who left, through tickets' `AssignTicket`; exactly once across
//!   processes.
//! - [`api`]: the gRPC `DispatchService`: checks callers and input, asks
//!   the store, answers each person with their presence now; the queue
//!   and routing's last decision on a ticket.
//! - [`events`]: the person as the wire says it, the facts of the store's
//!   writes (`person.*`, `presence.changed`), and the consumer of ticket
//!   events and entitlements that keeps routing's view of tickets.
//!
//! A write flows: api (role, input) → store (the row locked, the rules of
//! the whole person checked by domain, the change and its event in one
//! transaction) → relay. A presence flows: api → Redis (the heartbeat kept
//! or ended) → store (the stated presence and `presence.changed`). A read
//! asks PostgreSQL who, and Redis (one `MGET`) whether their stated
//! presence still holds. A ticket flows: its events → consumer (routing's
//! view of it, in the transaction that records the event) → the router,
//! woken after the commit → a decision recorded → tickets' `AssignTicket`
//! → `ticket.assigned` → consumer (the assignment seen, counted).

pub mod api;
pub mod domain;
pub mod events;
pub mod presence;
pub mod router;
pub mod routing;
pub mod store;

use std::{sync::Arc, time::Duration};

use hotline_kit::{
    auth::{Authority, Role},
    bus::{
        consumer::Consumer,
        outbox::{OutboxSignal, Relay},
    },
    cache::Redis,
    config::{Config, duration, text},
    grpc::{self, MAX_MESSAGE_BYTES, ServiceToken},
    supervisor::{Module, ModuleContext},
};
use hotline_proto::{
    dispatch::v1::dispatch_service_server::DispatchServiceServer,
    sla::v1::sla_service_client::SlaServiceClient,
    tickets::v1::ticket_service_client::TicketServiceClient,
};
use serde::Deserialize;
use sqlx::PgPool;
use tonic::service::interceptor::InterceptedService;

use crate::{router::Router, routing::FamilySkills};

pub const SCHEMA: &str = "dispatch";

static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// `[dispatch]` in the configuration, `HOTLINE_DISPATCH__*` in the
/// environment.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct DispatchConfig {
    /// How long a heartbeat keeps a person's presence: past it without
    /// another, they are offline.
    #[serde(deserialize_with = "duration")]
    pub heartbeat_ttl: Duration,
    /// How long a person may be away, offline or without a heartbeat before
    /// their tickets still awaiting a response are routed to others.
    #[serde(deserialize_with = "duration")]
    pub reroute_grace: Duration,
    /// How long a ticket waits with nobody able to take it before the
    /// overflow team may, skills relaxed.
    #[serde(deserialize_with = "duration")]
    pub overflow_after: Duration,
    /// The overflow team (people's `team`, case-blind); empty: no overflow.
    #[serde(deserialize_with = "text")]
    pub overflow_team: String,
    /// How often routing runs with no other reason to (and notices
    /// heartbeats that stopped, and refreshes sla's targets).
    #[serde(deserialize_with = "duration")]
    pub sweep: Duration,
    /// `family=skill,...`: the skill an asset's model family needs; a
    /// family not listed needs the skill of its own name.
    #[serde(deserialize_with = "text")]
    pub family_skills: String,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        Self {
            heartbeat_ttl: Duration::from_secs(90),
            reroute_grace: Duration::from_secs(120),
            overflow_after: Duration::from_secs(600),
            overflow_team: String::new(),
            sweep: Duration::from_secs(30),
            family_skills: String::new(),
        }
    }
}

/// The warranty's response target, from `[sla]`: every priority's target
/// until sla's policies are read.
#[derive(Debug, Deserialize)]
#[serde(default)]
struct Warranty {
    #[serde(deserialize_with = "duration")]
    response_target: Duration,
}

impl Default for Warranty {
    fn default() -> Self {
        Self {
            response_target: Duration::from_secs(2 * 3600),
        }
    }
}

/// The desk's country code, from `[intake]`: people's national numbers
/// are placed as callers' are.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Desk {
    #[serde(deserialize_with = "text")]
    country_code: String,
}

impl DispatchConfig {
    pub fn load(config: &hotline_kit::config::Config) -> anyhow::Result<Self> {
        let own: Self = config.section("dispatch")?;
        anyhow::ensure!(
            (Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&own.heartbeat_ttl),
            "dispatch.heartbeat_ttl must be from 1s to 1h, like 90s"
        );
        anyhow::ensure!(
            own.reroute_grace <= Duration::from_secs(DAY),
            "dispatch.reroute_grace must be from 0s to 1d, like 2m"
        );
        anyhow::ensure!(
            (Duration::from_secs(1)..=Duration::from_secs(DAY)).contains(&own.overflow_after),
            "dispatch.overflow_after must be from 1s to 1d, like 10m"
        );
        anyhow::ensure!(
            (Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&own.sweep),
            "dispatch.sweep must be from 1s to 1h, like 30s"
        );
        FamilySkills::parse(&own.family_skills)
            .map_err(|why| anyhow::anyhow!("dispatch.family_skills: {why}"))?;
        Ok(own)
    }

    /// How the router decides, with `sla.response_target` as the target of
    /// every priority until sla's policies are read.
    pub fn settings(&self, config: &Config) -> anyhow::Result<router::Settings> {
        let warranty: Warranty = config.section("sla")?;
        let team = self.overflow_team.trim().to_lowercase();
        Ok(router::Settings {
            family_skills: FamilySkills::parse(&self.family_skills)
                .map_err(|why| anyhow::anyhow!("dispatch.family_skills: {why}"))?,
            grace: self.reroute_grace,
            overflow_after: self.overflow_after,
            overflow_team: (!team.is_empty()).then_some(team),
            sweep: self.sweep,
            warranty: warranty.response_target,
        })
    }
}

/// Seconds in a day.
const DAY: u64 = 86_400;

/// The router of a process: tickets and sla called with a service token of
/// role dispatcher (subject `dispatch`); woken by `wake`.
pub fn router(
    config: &Config,
    authority: Arc<Authority>,
    pool: PgPool,
    redis: Arc<Redis>,
    wake: OutboxSignal,
) -> anyhow::Result<Router> {
    let own = DispatchConfig::load(config)?;
    let token = || ServiceToken::new(authority.clone(), "dispatch", &[Role::Dispatcher]);
    let tickets = TicketServiceClient::new(InterceptedService::new(
        grpc::channel(&config.endpoint("tickets"))?,
        token(),
    ))
    .max_decoding_message_size(MAX_MESSAGE_BYTES);
    let sla = SlaServiceClient::new(InterceptedService::new(
        grpc::channel(&config.endpoint("sla"))?,
        token(),
    ));
    Ok(Router::new(
        pool,
        Arc::new(presence::Liveness::new(redis, own.heartbeat_ttl)),
        tickets,
        sla,
        own.settings(config)?,
        wake,
    ))
}

pub fn module() -> Module {
    Module {
        name: "dispatch",
        depends_on: &["tickets"],
        schema: SCHEMA,
        migrations: &MIGRATIONS,
        consumes: events::CONSUMES,
        init,
    }
}

fn init(context: &mut ModuleContext) -> anyhow::Result<()> {
    let config = DispatchConfig::load(&context.config)?;
    let desk: Desk = context.config.section("intake")?;
    let pool = context.pool(SCHEMA)?;
    let liveness = Arc::new(presence::Liveness::new(
        context.redis(),
        config.heartbeat_ttl,
    ));
    let relay_signal = OutboxSignal::default();
    let wake = OutboxSignal::default();
    let redis = context.redis();
    let router = Arc::new(router(
        &context.config,
        context.authority.clone(),
        pool.clone(),
        redis,
        wake.clone(),
    )?);
    context.add_grpc(
        DispatchServiceServer::new(api::DispatchApi::new(
            pool.clone(),
            liveness,
            desk.country_code,
            relay_signal.clone(),
            router.clone(),
        ))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES),
    );
    let consumer = Consumer::new(
        "dispatch",
        events::CONSUMES,
        pool.clone(),
        context.subscriber.clone(),
        events::Handler,
        context.config.bus.clone(),
    )?
    .waking(wake);
    context.spawn("consumer", Arc::new(consumer).run(context.cancel.clone()));
    let cancel = context.cancel.clone();
    context.spawn("router", router.run(cancel));
    let relay = Relay::new(
        "dispatch",
        pool,
        relay_signal,
        context.publisher.clone(),
        &context.config.bus,
    );
    let cancel = context.cancel.clone();
    context.spawn("outbox-relay", async move { relay.run(cancel).await });
    Ok(())
}

#[cfg(test)]
mod tests {
    use hotline_kit::config::Config;

    use super::*;

    #[test]
    fn routing_waits_two_minutes_overflows_after_ten_and_sweeps_every_thirty_seconds() {
        let mut config = Config::default();
        let own = DispatchConfig::load(&config).unwrap();
        let settings = own.settings(&config).unwrap();
        assert_eq!(settings.grace, Duration::from_secs(120));
        assert_eq!(settings.overflow_after, Duration::from_secs(600));
        assert_eq!(settings.overflow_team, None);
        assert_eq!(settings.sweep, Duration::from_secs(30));
        assert_eq!(settings.warranty, Duration::from_secs(7200));
        config.set("dispatch", "overflow_team", " Backstop ");
        config.set("dispatch", "family_skills", "camera=cam,nvr=nvr");
        config.set("sla", "response_target", "1h");
        let settings = DispatchConfig::load(&config)
            .unwrap()
            .settings(&config)
            .unwrap();
        assert_eq!(settings.overflow_team.as_deref(), Some("backstop"));
        assert_eq!(
            settings.family_skills.skill("Camera").as_deref(),
            Some("cam")
        );
        assert_eq!(settings.warranty, Duration::from_secs(3600));
        for (key, bad, says) in [
            ("family_skills", "camera", "family=skill"),
            ("sweep", "0s", "dispatch.sweep"),
            ("overflow_after", "2d", "dispatch.overflow_after"),
            ("reroute_grace", "2d", "dispatch.reroute_grace"),
        ] {
            let mut config = Config::default();
            config.set("dispatch", key, bad);
            let refused = DispatchConfig::load(&config).unwrap_err().to_string();
            assert!(refused.contains(says), "{key}={bad}: {refused}");
        }
    }

    #[test]
    fn a_heartbeat_lasts_ninety_seconds_unless_told_otherwise() {
        let mut config = Config::default();
        assert_eq!(
            DispatchConfig::load(&config).unwrap().heartbeat_ttl,
            Duration::from_secs(90)
        );
        config.set("dispatch", "heartbeat_ttl", "2m");
        assert_eq!(
            DispatchConfig::load(&config).unwrap().heartbeat_ttl,
            Duration::from_secs(120)
        );
        for bad in ["0s", "500ms", "2h"] {
            config.set("dispatch", "heartbeat_ttl", bad);
            let refused = DispatchConfig::load(&config).unwrap_err().to_string();
            assert!(refused.contains("from 1s to 1h"), "{bad}: {refused}");
        }
    }
}
