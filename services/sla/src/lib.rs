//! `sla`: one response clock per ticket, breaches, and the escalation
//! ladder that climbs until someone responds (ARCHITECTURE §7).
//!
//! - [`domain`]: the clock and the ladder, pure.
//! - [`store`]: SQL; clocks, escalations fired, policies.
//! - [`index`]: the Redis due-index, rebuilt from PostgreSQL.
//! - [`scheduler`]: fires clocks when due, exactly once per step.
//! - [`events`]: ticket events and acknowledgements in, `sla.*` out.
//! - [`api`]: the gRPC `SlaService`.

pub mod api;
pub mod domain;
pub mod events;
pub mod index;
pub mod scheduler;
pub mod store;

use std::{sync::Arc, time::Duration};

use hotline_kit::{
    bus::{
        consumer::Consumer,
        outbox::{OutboxSignal, Relay},
    },
    config::{duration, durations},
    grpc::MAX_MESSAGE_BYTES,
    supervisor::{Module, ModuleContext},
    telemetry::counter_from_zero,
};
use hotline_proto::sla::v1::sla_service_server::SlaServiceServer;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::{domain::Ladder, index::DueIndex, scheduler::Scheduler};

pub const SCHEMA: &str = "sla";
/// The ticket events that move a clock, by name: `ticket.entitled`, which
/// comes with every new ticket and changes nothing a clock reads, is not
/// even delivered.
const CONSUMES: &[&str] = &[
    "ticket.created",
    "ticket.article_added",
    "ticket.awaiting_response",
    "ticket.responded",
    "ticket.assigned",
    "ticket.status_changed",
    "ticket.resolved",
    "ticket.closed",
    "ticket.reopened",
    "ticket.priority_changed",
    "page.acknowledged",
];

static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// `[sla]` in the configuration, `HOTLINE_SLA__*` in the environment.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct SlaConfig {
    /// The warranty promise: wall clock, 7x24. No policy may exceed it.
    #[serde(deserialize_with = "duration")]
    pub response_target: Duration,
    /// After the breach (level 1): the delays before level 2, level 3, ...
    #[serde(deserialize_with = "durations")]
    pub level_delays: Vec<Duration>,
    /// How often the last level repeats while nobody acknowledges.
    #[serde(deserialize_with = "duration")]
    pub repeat_every: Duration,
    /// How often PostgreSQL is asked for clocks the due-index missed.
    #[serde(deserialize_with = "duration")]
    pub safety_net: Duration,
}

impl Default for SlaConfig {
    fn default() -> Self {
        Self {
            response_target: Duration::from_secs(2 * 3600),
            level_delays: vec![Duration::from_secs(15 * 60), Duration::from_secs(30 * 60)],
            repeat_every: Duration::from_secs(30 * 60),
            safety_net: Duration::from_millis(500),
        }
    }
}

impl SlaConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.response_target >= Duration::from_secs(1),
            "sla.response_target must be at least 1s"
        );
        anyhow::ensure!(
            self.level_delays
                .iter()
                .chain([&self.repeat_every])
                .all(|d| *d >= Duration::from_secs(1)),
            "sla.level_delays and sla.repeat_every must each be at least 1s"
        );
        anyhow::ensure!(
            (Duration::from_millis(100)..=Duration::from_secs(1)).contains(&self.safety_net),
            "sla.safety_net must be between 100ms and 1s (it bounds how late a missed clock fires)"
        );
        Ok(())
    }

    pub fn ladder(&self) -> Ladder {
        Ladder {
            delays: self.level_delays.clone(),
            repeat_every: self.repeat_every,
        }
    }
}

pub fn module() -> Module {
    Module {
        name: "sla",
        depends_on: &["tickets"],
        schema: SCHEMA,
        migrations: &MIGRATIONS,
        consumes: CONSUMES,
        init,
    }
}

/// How often the gauges of waiting and breached tickets are counted.
const GAUGES_EVERY: Duration = Duration::from_secs(15);

/// Keeps `hotline_tickets_awaiting_response` and `hotline_tickets_breached`
/// current: counted from the clocks, so every replica reports the truth.
async fn count_waiting(pool: sqlx::PgPool, cancel: CancellationToken) -> anyhow::Result<()> {
    metrics::describe_gauge!(
        "hotline_tickets_awaiting_response",
        "Tickets whose response clock runs (breached or not)."
    );
    metrics::describe_gauge!(
        "hotline_tickets_breached",
        "Tickets awaiting a response past their due time."
    );
    loop {
        match store::waiting(&pool).await {
            Ok((awaiting, breached)) => {
                metrics::gauge!("hotline_tickets_awaiting_response").set(awaiting as f64);
                metrics::gauge!("hotline_tickets_breached").set(breached as f64);
            }
            Err(error) => tracing::warn!(error = %error, "cannot count waiting tickets"),
        }
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = tokio::time::sleep(GAUGES_EVERY) => {}
        }
    }
}

fn init(context: &mut ModuleContext) -> anyhow::Result<()> {
    counter_from_zero(
        "hotline_sla_escalations_total",
        "Escalation steps fired (the breach is the first).",
        &[],
    );
    metrics::describe_histogram!(
        "hotline_sla_breach_lag_seconds",
        metrics::Unit::Seconds,
        "From a clock's due time to its breach being recorded."
    );
    let config: SlaConfig = context.config.section("sla")?;
    config.validate()?;
    let pool = context.pool(SCHEMA)?;
    let pool_for_gauges = pool.clone();
    let index = Arc::new(DueIndex::new(context.redis()));
    let relay_signal = OutboxSignal::default();
    context.add_grpc(
        SlaServiceServer::new(api::SlaApi::new(
            pool.clone(),
            index.clone(),
            config.ladder(),
            config.response_target,
        ))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES),
    );
    let relay = Relay::new(
        "sla",
        pool.clone(),
        relay_signal.clone(),
        context.publisher.clone(),
        &context.config.bus,
    );
    let cancel = context.cancel.clone();
    context.spawn("outbox-relay", async move { relay.run(cancel).await });
    let handler = events::Handler {
        index: index.clone(),
        warranty: config.response_target,
    };
    let consumer = Consumer::new(
        "sla",
        CONSUMES,
        pool.clone(),
        context.subscriber.clone(),
        handler,
        context.config.bus.clone(),
    )?
    .waking(relay_signal.clone());
    context.spawn("consumer", Arc::new(consumer).run(context.cancel.clone()));
    let scheduler = Scheduler {
        pool,
        index,
        ladder: config.ladder(),
        relay: relay_signal,
        safety_net: config.safety_net,
        absent_once: Default::default(),
    };
    let cancel = context.cancel.clone();
    context.spawn("scheduler", async move { scheduler.run(cancel).await });
    context.spawn(
        "gauges",
        count_waiting(pool_for_gauges, context.cancel.clone()),
    );
    Ok(())
}
