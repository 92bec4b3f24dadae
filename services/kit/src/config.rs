//! Layered configuration: defaults, then an optional TOML file, then
//! environment variables `HOTLINE_<KEY>` with `__` for nesting
//! (`HOTLINE_AUTH__SECRET` sets `auth.secret`).
//!
//! Secrets are held in [`Secret`], whose `Debug` never prints the value.

use std::{collections::BTreeMap, fmt, net::SocketAddr, path::Path, time::Duration};

use anyhow::Context;
use figment::{
    Figment,
    providers::{Env, Format, Toml},
};
use serde::{Deserialize, Deserializer, de::DeserializeOwned};

/// Everything a Hotline process needs to know about its surroundings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Config {
    /// PostgreSQL, the truth. Each service connects with its own schema.
    pub database_url: Secret,
    /// RabbitMQ, where events flow.
    pub amqp_url: Secret,
    /// Redis, for hot state that can be rebuilt from PostgreSQL.
    pub redis_url: Secret,
    /// Prefixes exchanges, queues and Redis keys, so tests and tenants can
    /// share one broker and one Redis.
    pub namespace: String,
    /// Where this process serves all of its gRPC services.
    pub grpc_addr: SocketAddr,
    /// Where this process serves `/healthz`, `/readyz`, `/metrics` and the
    /// web endpoints of its modules.
    pub http_addr: SocketAddr,
    pub auth: AuthConfig,
    /// gRPC address of each service by name (`tickets`); a service missing
    /// here is reached in this very process.
    pub endpoints: BTreeMap<String, String>,
    pub bus: BusConfig,
    pub db: DbConfig,
    pub log: LogConfig,
    /// The settings of individual modules (`[sla]` in the file,
    /// `HOTLINE_SLA__RESPONSE_TARGET` in the environment), each read and
    /// validated by its module with [`Config::section`].
    #[serde(flatten)]
    pub sections: BTreeMap<String, figment::value::Value>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            database_url: Secret::new("postgres://postgres@127.0.0.1:5432/hotline"),
            amqp_url: Secret::new("amqp://guest:guest@127.0.0.1:5672/%2f"),
            redis_url: Secret::new("redis://127.0.0.1:6379/"),
            namespace: "hotline".into(),
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 50051)),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            auth: AuthConfig::default(),
            endpoints: BTreeMap::new(),
            bus: BusConfig::default(),
            db: DbConfig::default(),
            log: LogConfig::default(),
            sections: BTreeMap::new(),
        }
    }
}

impl Config {
    /// Defaults, then `file` when given, then the environment.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        let mut figment = Figment::new();
        if let Some(file) = file {
            anyhow::ensure!(
                file.exists(),
                "config file {} does not exist",
                file.display()
            );
            figment = figment.merge(Toml::file(file));
        }
        let mut config: Self = figment
            .merge(Env::prefixed("HOTLINE_").split("__"))
            .extract()
            .context("invalid configuration")?;
        for (variable, secret) in [
            ("HOTLINE_DATABASE_URL", &mut config.database_url),
            ("HOTLINE_AMQP_URL", &mut config.amqp_url),
            ("HOTLINE_REDIS_URL", &mut config.redis_url),
            ("HOTLINE_AUTH__SECRET", &mut config.auth.secret),
        ] {
            secret.take_verbatim_from_env(variable);
        }
        config.validate()?;
        Ok(config)
    }

    /// Refuses values that would make a service spin, stall or overflow.
    pub fn validate(&self) -> anyhow::Result<()> {
        let bus = &self.bus;
        anyhow::ensure!(bus.prefetch >= 1, "bus.prefetch must be at least 1");
        anyhow::ensure!(
            (1..=10_000).contains(&bus.relay_batch),
            "bus.relay_batch must be between 1 and 10000"
        );
        anyhow::ensure!(
            (1..=19).contains(&bus.max_attempts),
            "bus.max_attempts must be between 1 and 19"
        );
        anyhow::ensure!(
            bus.relay_poll >= Duration::from_millis(10),
            "bus.relay_poll must be at least 10ms"
        );
        anyhow::ensure!(
            bus.relay_linger <= Duration::from_secs(1),
            "bus.relay_linger must be at most 1s"
        );
        anyhow::ensure!(
            bus.retry_backoff <= Duration::from_secs(60),
            "bus.retry_backoff must be at most 60s"
        );
        anyhow::ensure!(
            (Duration::from_secs(86_400)..=Duration::from_secs(3650 * 86_400))
                .contains(&bus.inbox_retention),
            "bus.inbox_retention must be between 1d and 3650d"
        );
        anyhow::ensure!(
            self.db.max_connections >= 1,
            "db.max_connections must be at least 1"
        );
        Ok(())
    }

    /// A module's settings: its section, over the section type's defaults.
    pub fn section<T: DeserializeOwned + Default>(&self, name: &str) -> anyhow::Result<T> {
        match self.sections.get(name) {
            None => Ok(T::default()),
            Some(value) => value
                .deserialize()
                .with_context(|| format!("invalid configuration in [{name}]")),
        }
    }

    /// Sets one key of a module's section, read as the environment reads
    /// it (`set("sla", "response_target", "3s")`, `"4096"` a number).
    pub fn set(&mut self, section: &str, key: &str, value: &str) {
        let value: figment::value::Value = value
            .parse()
            .unwrap_or_else(|_| figment::value::Value::from(value));
        let entry = self
            .sections
            .entry(section.to_owned())
            .or_insert_with(|| figment::value::Dict::new().into());
        if let figment::value::Value::Dict(_, dict) = entry {
            dict.insert(key.to_owned(), value);
        } else {
            let mut dict = figment::value::Dict::new();
            dict.insert(key.to_owned(), value);
            *entry = dict.into();
        }
    }

    /// The gRPC endpoint of `service`: configured, or this process.
    pub fn endpoint(&self, service: &str) -> String {
        self.endpoints.get(service).cloned().unwrap_or_else(|| {
            // Listening on every interface: call it on loopback.
            let mut own = self.grpc_addr;
            if own.ip().is_unspecified() {
                own.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            format!("http://{own}")
        })
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct AuthConfig {
    /// HMAC key that signs and verifies bearer tokens. Required to serve.
    pub secret: Secret,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct BusConfig {
    /// Unacknowledged deliveries a consumer holds at once. Consumers apply
    /// what waits together in one transaction: the more they hold, the
    /// fewer commits under load (measured: 64 to 256 took the whole
    /// fleet's ticket creation from about 1,150 to 1,330 a second).
    pub prefetch: u16,
    /// Deliveries of one message before it is dead-lettered with its error.
    pub max_attempts: u32,
    /// Outbox rows one relay round publishes.
    pub relay_batch: i64,
    /// The relay's safety-net poll, in case a `NOTIFY` was missed.
    #[serde(deserialize_with = "duration")]
    pub relay_poll: Duration,
    /// After a writer's wake-up, how long the relay waits for more rows
    /// before publishing: a little latency for far fewer round trips.
    #[serde(deserialize_with = "duration")]
    pub relay_linger: Duration,
    /// First delay before redelivering a failed message; doubles per attempt.
    #[serde(deserialize_with = "duration")]
    pub retry_backoff: Duration,
    /// How long a consumer remembers an applied event, to ignore it if it
    /// comes again: far longer than any redelivery or republish takes.
    #[serde(deserialize_with = "duration")]
    pub inbox_retention: Duration,
}

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            prefetch: 256,
            max_attempts: 5,
            relay_batch: 500,
            relay_poll: Duration::from_secs(1),
            relay_linger: Duration::from_millis(2),
            retry_backoff: Duration::from_millis(200),
            inbox_retention: Duration::from_secs(30 * 86_400),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct DbConfig {
    /// Connections per service pool.
    pub max_connections: u32,
    /// How long a query waits for a connection (and for a down database to
    /// come back) before it fails.
    #[serde(deserialize_with = "duration")]
    pub acquire_timeout: Duration,
}

impl Default for DbConfig {
    fn default() -> Self {
        Self {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct LogConfig {
    /// `tracing` filter directives, e.g. `info,hotline_kit=debug`.
    /// `RUST_LOG` wins when set.
    pub filter: String,
    /// `text` for people, `json` for log shippers.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            // lapin::channels logs every connection-level error at ERROR,
            // among them the close-ok frames of channels that are still
            // closing when a stopping process closes its connection. Every
            // real loss also reaches the bus, which reports it (WARN) and
            // reconnects; so lapin's own line says nothing more.
            filter: "info,sqlx::postgres::notice=warn,lapin::channels=off".into(),
            format: LogFormat::Text,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// A value that must never reach a log: `Debug` prints `[redacted]`.
#[derive(Clone, Default)]
pub struct Secret(String);

impl<'de> Deserialize<'de> for Secret {
    /// Takes any scalar as text: the environment provider reads
    /// `HOTLINE_AUTH__SECRET=12345` as a number, and a type error must not
    /// print the value.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Signed(i64),
            Unsigned(u64),
            Float(f64),
            Flag(bool),
        }
        match Raw::deserialize(deserializer) {
            Ok(Raw::Text(text)) => Ok(Secret(text)),
            Ok(Raw::Signed(n)) => Ok(Secret(n.to_string())),
            Ok(Raw::Unsigned(n)) => Ok(Secret(n.to_string())),
            Ok(Raw::Float(n)) => Ok(Secret(n.to_string())),
            Ok(Raw::Flag(b)) => Ok(Secret(b.to_string())),
            Err(_) => Err(serde::de::Error::custom("a secret must be text")),
        }
    }
}

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// Replaces the value with `variable` exactly as the environment holds
    /// it, when set: the environment provider parses values (`007123`
    /// becomes 7123), which a secret must never go through.
    pub fn take_verbatim_from_env(&mut self, variable: &str) {
        if let Ok(value) = std::env::var(variable) {
            self.0 = value;
        }
    }

    /// The value itself, for the one place that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Parses durations written as `250ms`, `3s`, `90m`, `2h`, `1d`, or a sum
/// such as `1h30m`. A bare number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!(
                "invalid duration {text:?}: expected a number at {rest:?}"
            ));
        }
        let amount: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("invalid duration {text:?}: number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(1),
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            "d" => Duration::from_secs(86_400),
            other => {
                return Err(format!(
                    "invalid duration {text:?}: unknown unit {other:?} (use ms, s, m, h or d)"
                ));
            }
        };
        rest = &rest[unit_len..];
        let part = unit
            .checked_mul(
                u32::try_from(amount)
                    .map_err(|_| format!("invalid duration {text:?}: too large"))?,
            )
            .ok_or_else(|| format!("invalid duration {text:?}: too large"))?;
        total += part;
    }
    Ok(total)
}

/// Serde adapter for [`parse_duration`]; also takes a bare number of seconds.
pub fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Seconds(u64),
        Text(String),
    }
    match Raw::deserialize(deserializer)? {
        Raw::Seconds(seconds) => Ok(Duration::from_secs(seconds)),
        Raw::Text(text) => parse_duration(&text).map_err(serde::de::Error::custom),
    }
}

/// Serde adapter for a text setting the environment may read as a number
/// (`HOTLINE_INTAKE__COUNTRY_CODE=49`): any scalar, as text.
pub fn text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Unsigned(u64),
        Signed(i64),
    }
    Ok(match Raw::deserialize(deserializer)? {
        Raw::Text(text) => text,
        Raw::Unsigned(n) => n.to_string(),
        Raw::Signed(n) => n.to_string(),
    })
}

/// Serde adapter for a list of durations: `"15m,30m"` or a TOML array.
pub fn durations<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<Duration>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        List(Vec<String>),
        Text(String),
        Seconds(u64),
    }
    let parts = match Raw::deserialize(deserializer)? {
        Raw::List(list) => list,
        Raw::Text(text) => text.split(',').map(str::to_owned).collect(),
        Raw::Seconds(seconds) => vec![seconds.to_string()],
    };
    parts
        .iter()
        .filter(|part| !part.trim().is_empty())
        .map(|part| parse_duration(part).map_err(serde::de::Error::custom))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("90m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("3s"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert!(parse_duration("2 hours").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API returns its own error
    fn a_numeric_secret_is_read_verbatim_and_bad_tuning_is_refused() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("HOTLINE_AUTH__SECRET", "0012345678901234567890123456789012");
            let config = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(
                config.auth.secret.expose(),
                "0012345678901234567890123456789012",
                "taken verbatim, leading zeros and all"
            );
            jail.set_env("HOTLINE_BUS__RELAY_BATCH", "0");
            let refused = Config::load(None)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(refused.contains("relay_batch"), "{refused}");
            Ok(())
        });
    }

    #[test]
    fn secrets_never_print() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?}"), "[redacted]");
        let config = Config {
            auth: AuthConfig { secret },
            ..Config::default()
        };
        assert!(!format!("{config:?}").contains("hunter2"));
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API returns its own error
    fn environment_overrides_file_and_nests_with_double_underscore() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "hotline.toml",
                "namespace = \"from-file\"\n[bus]\nprefetch = 7\n",
            )?;
            jail.set_env("HOTLINE_NAMESPACE", "from-env");
            jail.set_env("HOTLINE_AUTH__SECRET", "s3cret");
            jail.set_env("HOTLINE_BUS__RELAY_POLL", "250ms");
            jail.set_env("HOTLINE_ENDPOINTS__TICKETS", "http://10.0.0.1:50051");
            let config =
                Config::load(Some(Path::new("hotline.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(config.namespace, "from-env");
            assert_eq!(config.bus.prefetch, 7);
            assert_eq!(config.bus.relay_poll, Duration::from_millis(250));
            assert_eq!(config.auth.secret.expose(), "s3cret");
            assert_eq!(config.endpoint("tickets"), "http://10.0.0.1:50051");
            assert_eq!(config.endpoint("sla"), "http://127.0.0.1:50051");
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API returns its own error
    fn a_module_reads_its_own_section_over_its_defaults() {
        #[derive(Deserialize, Default, Debug)]
        #[serde(default)]
        struct Sla {
            #[serde(deserialize_with = "duration")]
            response_target: Duration,
            name: String,
            #[serde(deserialize_with = "text")]
            code: String,
        }
        figment::Jail::expect_with(|jail| {
            jail.create_file("hotline.toml", "[sla]\nname = \"desk\"\n")?;
            jail.set_env("HOTLINE_SLA__RESPONSE_TARGET", "90m");
            jail.set_env("HOTLINE_SLA__CODE", "49");
            let config =
                Config::load(Some(Path::new("hotline.toml"))).map_err(|e| e.to_string())?;
            let sla: Sla = config.section("sla").map_err(|e| e.to_string())?;
            assert_eq!(sla.response_target, Duration::from_secs(5400));
            assert_eq!(sla.name, "desk");
            assert_eq!(sla.code, "49", "a number read as text");
            let absent: Sla = config.section("pager").map_err(|e| e.to_string())?;
            assert_eq!(absent.response_target, Duration::ZERO);
            let mut config = config;
            config.set("sla", "response_target", "3s");
            let sla: Sla = config.section("sla").map_err(|e| e.to_string())?;
            assert_eq!(sla.response_target, Duration::from_secs(3));
            assert_eq!(sla.name, "desk", "setting one key keeps the others");
            jail.set_env("HOTLINE_SLA__RESPONSE_TARGET", "soon");
            let config = Config::load(None).map_err(|e| e.to_string())?;
            let refused = config.section::<Sla>("sla").err().map(|e| format!("{e:#}"));
            assert!(refused.is_some_and(|e| e.contains("[sla]")));
            Ok(())
        });
    }
}
