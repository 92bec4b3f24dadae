//! `contracts`: whom the desk serves and what they bought (ARCHITECTURE
//! §12, promises P1 and P6).
//!
//! - [`domain`]: the rules, pure: amounts to the cent, the warranty's last
//!   day, a contract's term in whole months and its 5% cap, the coverage of
//!   an asset on a day.
//! - [`store`]: the only SQL: the directory (customers, branches,
//!   contacts), projects, assets and models, contracts and the assets they
//!   cover — PostgreSQL refuses two contracts on one asset for one day.
//! - [`api`]: the gRPC `ContractsService`: checks callers and input, asks
//!   the store, derives warranty and coverage at read time.
//! - [`notices`]: the scan that tells a branch ahead of its assets'
//!   warranty or contract end, with a renewal quote under the cap: a
//!   `contracts.notice` event that intake mails through its relay.
//! - [`entitlement`]: whom a new ticket is for and what covers it, from
//!   its contact and the serials it names.
//! - [`events`]: `ticket.created` in, `entitlement.resolved` out, and the
//!   facts of the store's writes (`project.*`, `asset.added`,
//!   `contract.*`).
//! - [`import`] (with [`csv`]): a CSV file of the installed base read as it
//!   arrives, every row checked by the api's rules, the file held together
//!   (a serial once, one set of values per branch, project, contact);
//!   [`store::import`] stages it with `COPY` and merges it set-based, all
//!   or nothing.
//!
//! A request flows: api (role, input) → store (one transaction; the cap
//! checked by domain inside it; the write's event in the outbox) → api
//! (warranty and coverage derived for the answer). Nothing derived is
//! stored, so moving an acceptance date moves every date that follows
//! from it. A new ticket flows: consumer → entitlement (three indexed
//! queries at most) → `entitlement.resolved` in the outbox, in the
//! transaction that records the ticket's event as applied.

pub mod api;
pub mod csv;
pub mod domain;
pub mod entitlement;
pub mod events;
pub mod import;
pub mod notices;
pub mod store;

use std::{sync::Arc, time::Duration};

use hotline_kit::{
    bus::{
        consumer::Consumer,
        outbox::{OutboxSignal, Relay},
    },
    config::{duration, text},
    grpc::MAX_MESSAGE_BYTES,
    supervisor::{Module, ModuleContext},
};
use hotline_proto::contracts::v1::contracts_service_server::ContractsServiceServer;
use serde::Deserialize;

pub const SCHEMA: &str = "contracts";
const CONSUMES: &[&str] = &["ticket.created"];

static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// `[contracts]` in the configuration, `HOTLINE_CONTRACTS__*` in the
/// environment.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ContractsConfig {
    /// Country code for contacts' national numbers (`030 1234567` with
    /// `49`), digits only. Unset: `intake.country_code`, so that a number
    /// stored here and a caller's number from the PBX are normalised alike.
    #[serde(deserialize_with = "text")]
    pub country_code: String,
    /// How long before a warranty's or contract's end the branch is told:
    /// whole days, since ends are days.
    #[serde(deserialize_with = "duration")]
    pub notice_ahead: Duration,
    /// How often the notice scan runs (and once at start): a new day at a
    /// site is noticed within this long.
    #[serde(deserialize_with = "duration")]
    pub notice_every: Duration,
}

impl Default for ContractsConfig {
    fn default() -> Self {
        Self {
            country_code: String::new(),
            notice_ahead: Duration::from_secs(60 * DAY),
            notice_every: Duration::from_secs(3600),
        }
    }
}

/// Seconds in a day.
const DAY: u64 = 86_400;

impl ContractsConfig {
    /// The configuration of `[contracts]`, the country code falling back to
    /// intake's.
    pub fn load(config: &hotline_kit::config::Config) -> anyhow::Result<Self> {
        let mut own: Self = config.section("contracts")?;
        if own.country_code.is_empty() {
            let intake: Self = config.section("intake")?;
            own.country_code = intake.country_code;
        }
        anyhow::ensure!(
            own.country_code.len() <= 3 && own.country_code.chars().all(|c| c.is_ascii_digit()),
            "contracts.country_code must be 1 to 3 digits, like 49 or 86"
        );
        let ahead = own.notice_ahead.as_secs();
        anyhow::ensure!(
            own.notice_ahead.subsec_nanos() == 0
                && ahead.is_multiple_of(DAY)
                && (1..=366).contains(&(ahead / DAY)),
            "contracts.notice_ahead must be whole days from 1d to 366d, like 60d"
        );
        anyhow::ensure!(
            (Duration::from_secs(1)..=Duration::from_secs(DAY)).contains(&own.notice_every),
            "contracts.notice_every must be from 1s to 1d, like 1h"
        );
        Ok(own)
    }

    /// [`ContractsConfig::notice_ahead`] in days (checked by `load`).
    pub fn notice_ahead_days(&self) -> u32 {
        u32::try_from(self.notice_ahead.as_secs() / DAY).unwrap_or(u32::MAX)
    }
}

pub fn module() -> Module {
    Module {
        name: "contracts",
        depends_on: &[],
        schema: SCHEMA,
        migrations: &MIGRATIONS,
        consumes: CONSUMES,
        init,
    }
}

fn init(context: &mut ModuleContext) -> anyhow::Result<()> {
    let config = ContractsConfig::load(&context.config)?;
    let pool = context.pool(SCHEMA)?;
    let relay_signal = OutboxSignal::default();
    context.allow_long_call(api::IMPORT_METHOD, api::IMPORT_LIMIT);
    context.add_grpc(
        ContractsServiceServer::new(api::ContractsApi::new(
            pool.clone(),
            config.country_code.clone(),
            relay_signal.clone(),
        ))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES),
    );
    let relay = Relay::new(
        "contracts",
        pool.clone(),
        relay_signal.clone(),
        context.publisher.clone(),
        &context.config.bus,
    );
    let cancel = context.cancel.clone();
    context.spawn("outbox-relay", async move { relay.run(cancel).await });
    let notices = notices::Notices {
        pool: pool.clone(),
        relay: relay_signal.clone(),
        ahead_days: config.notice_ahead_days(),
        every: config.notice_every,
    };
    let cancel = context.cancel.clone();
    context.spawn("notices", async move { notices.run(cancel).await });
    let handler = events::Handler {
        country_code: config.country_code,
    };
    let consumer = Consumer::new(
        "contracts",
        CONSUMES,
        pool,
        context.subscriber.clone(),
        handler,
        context.config.bus.clone(),
    )?
    .waking(relay_signal);
    context.spawn("consumer", Arc::new(consumer).run(context.cancel.clone()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use hotline_kit::config::Config;

    use super::ContractsConfig;

    #[test]
    fn the_country_code_is_intakes_unless_contracts_sets_its_own() {
        let mut config = Config::default();
        assert_eq!(ContractsConfig::load(&config).unwrap().country_code, "");
        config.set("intake", "country_code", "49");
        assert_eq!(ContractsConfig::load(&config).unwrap().country_code, "49");
        config.set("contracts", "country_code", "86");
        assert_eq!(ContractsConfig::load(&config).unwrap().country_code, "86");
        config.set("contracts", "country_code", "4x");
        assert!(ContractsConfig::load(&config).is_err());
    }

    #[test]
    fn notices_go_sixty_days_ahead_unless_told_other_whole_days() {
        let mut config = Config::default();
        assert_eq!(
            ContractsConfig::load(&config).unwrap().notice_ahead_days(),
            60
        );
        config.set("contracts", "notice_ahead", "90d");
        assert_eq!(
            ContractsConfig::load(&config).unwrap().notice_ahead_days(),
            90
        );
        config.set("contracts", "notice_ahead", "2160h");
        assert_eq!(
            ContractsConfig::load(&config).unwrap().notice_ahead_days(),
            90
        );
        for bad in ["36h", "0d", "400d", "0"] {
            config.set("contracts", "notice_ahead", bad);
            let refused = ContractsConfig::load(&config).unwrap_err().to_string();
            assert!(
                refused.contains("whole days from 1d to 366d"),
                "{bad}: {refused}"
            );
        }
        config.set("contracts", "notice_ahead", "60d");
        config.set("contracts", "notice_every", "0s");
        assert!(ContractsConfig::load(&config).is_err());
    }
}
