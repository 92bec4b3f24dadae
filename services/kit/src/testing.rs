//! The test harness: every test gets a running app with its own database,
//! its own bus namespace and its own Redis key prefix, bound on port 0, and
//! typed helpers to reach it. Tests talk to the real PostgreSQL, RabbitMQ and
//! Redis named by `HOTLINE_DATABASE_URL`, `HOTLINE_AMQP_URL` and
//! `HOTLINE_REDIS_URL` (defaults: the local ones).

use std::{collections::BTreeSet, net::SocketAddr, sync::Mutex, time::Duration};

use anyhow::Context;
use chrono::Utc;
use sqlx::{Connection, PgConnection, PgPool};
use tonic::{service::interceptor::InterceptedService, transport::Channel};
use uuid::Uuid;

use crate::{
    auth::{Authority, Role},
    config::{Config, Secret},
    db,
    grpc::{self, BearerToken},
    supervisor::{App, Module, migrate},
};

/// A fresh, isolated environment: configuration pointing at a new database,
/// a new namespace and a new auth secret.
pub struct TestEnv {
    pub config: Config,
    /// The database created for this test.
    pub database: String,
    /// The consuming services whose queues this test declared: deleted
    /// from the shared broker when the environment is dropped, even by a
    /// failing test (hundreds of forgotten quorum queues stall RabbitMQ).
    consumers: Mutex<BTreeSet<String>>,
}

impl TestEnv {
    pub async fn new() -> anyhow::Result<Self> {
        let base = Config::load(None)?;
        let id = Uuid::new_v4().simple().to_string();
        let database = format!("hotline_test_{}", &id[..16]);
        let admin_url = with_database(base.database_url.expose(), "postgres");
        let mut admin = PgConnection::connect(&admin_url)
            .await
            .context("connecting to PostgreSQL to create a test database")?;
        sqlx::query(&format!("CREATE DATABASE {database}"))
            .execute(&mut admin)
            .await?;
        admin.close().await?;
        let config = Config {
            database_url: Secret::new(with_database(base.database_url.expose(), &database)),
            namespace: format!("t{}", &id[..12]),
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            auth: crate::config::AuthConfig {
                secret: Secret::new(Uuid::new_v4().simple().to_string() + &id),
            },
            ..base
        };
        let mut config = config;
        // Modules' own listeners bind port 0 too, so tests run side by side.
        config.set("intake", "smtp_addr", "127.0.0.1:0");
        Ok(Self {
            config,
            database,
            consumers: Mutex::default(),
        })
    }

    /// A pool on `schema` of this test's database.
    pub fn pool(&self, schema: &str) -> anyhow::Result<PgPool> {
        db::pool(&self.config, schema)
    }

    /// A token for `role`, signed with this environment's secret.
    pub fn token(&self, subject: &str, role: Role) -> String {
        Authority::new(&self.config.auth.secret)
            .expect("test secret is long enough")
            .issue(subject, &[role], Utc::now(), chrono::Duration::hours(1))
    }

    /// Applies `modules`' migrations and declares their queues (as `hotline
    /// migrate` does), remembering the queues to delete at the end.
    pub async fn migrate(&self, modules: &[Module]) -> anyhow::Result<()> {
        if let Ok(mut consumers) = self.consumers.lock() {
            consumers.extend(
                modules
                    .iter()
                    .filter(|m| !m.consumes.is_empty())
                    .map(|m| m.name.to_owned()),
            );
        }
        migrate(&self.config, modules).await
    }

    /// Migrates `modules` and starts them as one process.
    pub async fn start(&self, modules: &[Module]) -> anyhow::Result<TestApp> {
        self.migrate(modules).await?;
        let app = App::start(self.config.clone(), modules).await?;
        let grpc_addr = app.grpc_addr();
        let http_addr = app.http_addr();
        let stop = tokio_util::sync::CancellationToken::new();
        let stopper = stop.clone();
        let running = tokio::spawn(app.run_until(stopper.cancelled_owned()));
        Ok(TestApp {
            grpc_addr,
            http_addr,
            stop,
            running,
        })
    }

    /// Deletes this test's queues (of `services` and of every module it
    /// migrated) and exchanges from the shared broker now.
    pub async fn cleanup_bus(&self, services: &[&str]) -> anyhow::Result<()> {
        let mut all: BTreeSet<String> = services.iter().map(|s| (*s).to_owned()).collect();
        if let Ok(consumers) = self.consumers.lock() {
            all.extend(consumers.iter().cloned());
        }
        let all: Vec<String> = all.into_iter().collect();
        delete_bus(self.config.amqp_url.expose(), &self.config.namespace, &all).await
    }
}

impl Drop for TestEnv {
    /// Deletes the test's queues and exchanges, on a thread of its own (a
    /// drop cannot await), bounded so a broker that is away costs seconds.
    fn drop(&mut self) {
        let consumers: Vec<String> = self
            .consumers
            .lock()
            .map(|c| c.iter().cloned().collect())
            .unwrap_or_default();
        if consumers.is_empty() {
            return;
        }
        let url = self.config.amqp_url.expose().to_owned();
        let ns = self.config.namespace.clone();
        let cleaning = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                let _ =
                    tokio::time::timeout(Duration::from_secs(5), delete_bus(&url, &ns, &consumers))
                        .await;
            });
        });
        let _ = cleaning.join();
    }
}

/// Deletes `services`' queues and the exchanges of namespace `ns`.
async fn delete_bus(url: &str, ns: &str, services: &[String]) -> anyhow::Result<()> {
    use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
    let connection = lapin::Connection::connect(url, Default::default()).await?;
    let channel = connection.create_channel().await?;
    for service in services {
        for queue in [format!("{ns}.{service}"), format!("{ns}.{service}.dead")] {
            channel
                .queue_delete(queue.into(), QueueDeleteOptions::default())
                .await?;
        }
    }
    for exchange in [format!("{ns}.events"), format!("{ns}.dead")] {
        channel
            .exchange_delete(exchange.into(), ExchangeDeleteOptions::default())
            .await?;
    }
    connection.close(200, "done".into()).await?;
    Ok(())
}

/// A running app in this test's environment.
pub struct TestApp {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    stop: tokio_util::sync::CancellationToken,
    running: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl TestApp {
    /// A gRPC channel to the app, authenticated as `token`.
    pub fn channel(&self, token: &str) -> InterceptedService<Channel, BearerToken> {
        let channel = grpc::channel(&format!("http://{}", self.grpc_addr)).expect("valid address");
        InterceptedService::new(channel, BearerToken::new(token).expect("ascii token"))
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http_addr)
    }

    /// `GET path` on the app's HTTP port: the status code and the body.
    pub async fn http_get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(self.http_addr).await?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: hotline\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await?;
        let status = response
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .context("not an HTTP response")?;
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_owned())
            .unwrap_or_default();
        Ok((status, body))
    }

    /// Waits until `/readyz` answers `want` (200 or 503), at most `limit`.
    pub async fn await_readiness(
        &self,
        want: u16,
        limit: std::time::Duration,
    ) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let (status, body) = self.http_get("/readyz").await?;
            if status == want {
                return Ok(());
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "/readyz stayed {status} ({body}) instead of {want}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Stops the app as SIGTERM would, and returns how it ended.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        self.running.await?
    }
}

/// `url` with its database name replaced by `database`.
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_end = base.find("://").map_or(0, |i| i + 3);
    let root = match base[authority_end..].find('/') {
        Some(slash) => &base[..authority_end + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{root}/{database}?{query}"),
        None => format!("{root}/{database}"),
    }
}

/// Reads the events published in a namespace, through a private queue bound
/// to its events exchange (tests, and the load generator).
pub struct EventTap {
    _connection: lapin::Connection,
    consumer: lapin::Consumer,
}

impl EventTap {
    /// Every event.
    pub async fn new(config: &Config) -> anyhow::Result<Self> {
        Self::bound(config, "#").await
    }

    /// The events whose type matches `binding` (`ticket.created`, `ticket.*`).
    pub async fn bound(config: &Config, binding: &str) -> anyhow::Result<Self> {
        use lapin::{
            ExchangeKind,
            options::{
                BasicConsumeOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
            },
            types::FieldTable,
        };
        let connection =
            lapin::Connection::connect(config.amqp_url.expose(), Default::default()).await?;
        let channel = connection.create_channel().await?;
        let exchange = format!("{}.events", config.namespace);
        channel
            .exchange_declare(
                exchange.as_str().into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        let queue = channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions::exclusive(),
                FieldTable::default(),
            )
            .await?;
        channel
            .queue_bind(
                queue.name().clone(),
                exchange.into(),
                binding.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let consumer = channel
            .basic_consume(
                queue.name().clone(),
                "tap".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        Ok(Self {
            _connection: connection,
            consumer,
        })
    }

    /// The next event, or `None` if none comes within `wait`.
    pub async fn next(
        &mut self,
        wait: std::time::Duration,
    ) -> Option<(
        hotline_proto::events::v1::EventEnvelope,
        lapin::BasicProperties,
    )> {
        use futures_util::StreamExt;
        use prost::Message;
        let delivery = tokio::time::timeout(wait, self.consumer.next())
            .await
            .ok()??
            .ok()?;
        let event =
            hotline_proto::events::v1::EventEnvelope::decode(delivery.data.as_slice()).ok()?;
        Some((event, delivery.properties))
    }

    /// Events until none has come for `quiet`.
    pub async fn drain(
        &mut self,
        quiet: std::time::Duration,
    ) -> Vec<hotline_proto::events::v1::EventEnvelope> {
        let mut events = Vec::new();
        while let Some((event, _)) = self.next(quiet).await {
            events.push(event);
        }
        events
    }
}

/// A shared backing service stopped by a fault test (`fault_*` tests run
/// one at a time). It is started again by [`Outage::end`], or when the guard
/// drops, so a test failing mid-way never leaves it down.
pub struct Outage {
    start: Option<String>,
}

const POSTGRES_CLUSTER: &str =
    "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql | head -1) main";

impl Outage {
    /// Stops RabbitMQ (the node stays up, the broker application stops).
    pub async fn broker() -> Self {
        Self::begin("rabbitmqctl stop_app", "rabbitmqctl start_app".into()).await
    }

    /// Stops PostgreSQL (fast shutdown: connections are cut).
    pub async fn database() -> Self {
        Self::begin(
            &format!("{POSTGRES_CLUSTER} stop -m fast"),
            format!("{POSTGRES_CLUSTER} start"),
        )
        .await
    }

    async fn begin(stop: &str, start: String) -> Self {
        control(stop).await;
        Self { start: Some(start) }
    }

    /// Starts the service again.
    pub async fn end(mut self) {
        if let Some(start) = self.start.take() {
            control(&start).await;
        }
    }
}

impl Drop for Outage {
    fn drop(&mut self) {
        if let Some(start) = self.start.take() {
            let _ = std::process::Command::new("bash")
                .args(["-c", &start])
                .status();
        }
    }
}

/// Runs a control command through the shell; it must succeed.
async fn control(command: &str) {
    let status = tokio::process::Command::new("bash")
        .args(["-c", command])
        .status()
        .await
        .map(|status| status.success());
    assert!(matches!(status, Ok(true)), "{command} failed");
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn database_is_replaced_keeping_host_and_options() {
        assert_eq!(
            with_database("postgres://u:p@h:5432/app?sslmode=disable", "t1"),
            "postgres://u:p@h:5432/t1?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h", "t1"), "postgres://h/t1");
    }
}
