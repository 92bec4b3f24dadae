//! `dispatch`: who works the desk and who is there (ARCHITECTURE §13).
//! Routing will sit on it.
//!
//! - [`domain`]: the rules, pure: roles, skills with levels (`nvr:3`,
//!   `lang:de`), regions, capacity, a technician's home base and time
//!   zone, what a partial update changes, presence stated and effective.
//! - [`store`]: the only SQL: the directory of people with their skills
//!   and stated presence; each write with its event in the outbox.
//! - [`presence`]: liveness, one Redis key per person with a time-to-live
//!   that heartbeats renew.
//! - [`api`]: the gRPC `DispatchService`: checks callers and input, asks
//!   the store, answers each person with their presence now.
//! - [`events`]: the person as the wire says it, and the facts of the
//!   store's writes (`person.*`, `presence.changed`).
//!
//! A write flows: api (role, input) → store (the row locked, the rules of
//! the whole person checked by domain, the change and its event in one
//! transaction) → relay. A presence flows: api → Redis (the heartbeat kept
//! or ended) → store (the stated presence and `presence.changed`). A read
//! asks PostgreSQL who, and Redis (one `MGET`) whether their stated
//! presence still holds.

pub mod api;
pub mod domain;
pub mod events;
pub mod presence;
pub mod store;

use std::{sync::Arc, time::Duration};

use hotline_kit::{
    bus::outbox::{OutboxSignal, Relay},
    config::{duration, text},
    grpc::MAX_MESSAGE_BYTES,
    supervisor::{Module, ModuleContext},
};
use hotline_proto::dispatch::v1::dispatch_service_server::DispatchServiceServer;
use serde::Deserialize;

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
}

impl Default for DispatchConfig {
    fn default() -> Self {
        Self {
            heartbeat_ttl: Duration::from_secs(90),
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
        Ok(own)
    }
}

pub fn module() -> Module {
    Module {
        name: "dispatch",
        depends_on: &[],
        schema: SCHEMA,
        migrations: &MIGRATIONS,
        consumes: &[],
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
    context.add_grpc(
        DispatchServiceServer::new(api::DispatchApi::new(
            pool.clone(),
            liveness,
            desk.country_code,
            relay_signal.clone(),
        ))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES),
    );
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
