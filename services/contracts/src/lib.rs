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
//! - [`import`] (with [`csv`]): a CSV file of the installed base read as it
//!   arrives, every row checked by the api's rules, the file held together
//!   (a serial once, one set of values per branch, project, contact);
//!   [`store::import`] stages it with `COPY` and merges it set-based, all
//!   or nothing.
//!
//! A request flows: api (role, input) → store (one transaction; the cap
//! checked by domain inside it) → api (warranty and coverage derived for
//! the answer). Nothing derived is stored, so moving an acceptance date
//! moves every date that follows from it.

pub mod api;
pub mod csv;
pub mod domain;
pub mod import;
pub mod store;

use hotline_kit::{
    config::text,
    grpc::MAX_MESSAGE_BYTES,
    supervisor::{Module, ModuleContext},
};
use hotline_proto::contracts::v1::contracts_service_server::ContractsServiceServer;
use serde::Deserialize;

pub const SCHEMA: &str = "contracts";

static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// `[contracts]` in the configuration, `HOTLINE_CONTRACTS__*` in the
/// environment.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ContractsConfig {
    /// Country code for contacts' national numbers (`030 1234567` with
    /// `49`), digits only. Unset: `intake.country_code`, so that a number
    /// stored here and a caller's number from the PBX are normalised alike.
    #[serde(deserialize_with = "text")]
    pub country_code: String,
}

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
        Ok(own)
    }
}

pub fn module() -> Module {
    Module {
        name: "contracts",
        depends_on: &[],
        schema: SCHEMA,
        migrations: &MIGRATIONS,
        consumes: &[],
        init,
    }
}

fn init(context: &mut ModuleContext) -> anyhow::Result<()> {
    let config = ContractsConfig::load(&context.config)?;
    let pool = context.pool(SCHEMA)?;
    context.allow_long_call(api::IMPORT_METHOD, api::IMPORT_LIMIT);
    context.add_grpc(
        ContractsServiceServer::new(api::ContractsApi::new(pool, config.country_code))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
    );
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
}
