//! The supervisor: the single owner of a process's lifecycle.
//!
//! A [`Module`] is one service: a name, the modules it depends on, its schema
//! and migrations, and an init function that registers its gRPC services,
//! HTTP routes and background tasks on a [`ModuleContext`]. [`App::start`]
//! binds the listeners (port 0 allowed, addresses exposed), starts the
//! modules in dependency order, and serves; `/readyz` is false until every
//! module is up and while a backing service it uses is unreachable. It also
//! serves the dead letters of the consuming modules it runs
//! ([`crate::admin`]).
//! [`App::run_until`] stops everything on a signal — not ready, stop
//! accepting, drain in-flight work — and returns an error if any task
//! failed.

use std::{
    collections::BTreeSet,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::Context;
use axum::{Router, http::StatusCode, routing::get};
use hotline_proto::admin::v1::dead_letter_service_server::DeadLetterServiceServer;
use sqlx::PgPool;
use tokio::{net::TcpListener, task::JoinSet};
use tokio_util::sync::CancellationToken;
use tonic::{server::NamedService, service::RoutesBuilder, transport::Server};

use crate::{
    admin::DeadLetterApi,
    auth::{Authenticate, Authority},
    bus::Bus,
    cache::Redis,
    config::Config,
    db, grpc, telemetry,
};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// One service of the fleet.
#[derive(Clone, Copy)]
pub struct Module {
    pub name: &'static str,
    /// Modules that must be started first when they run in this process.
    pub depends_on: &'static [&'static str],
    /// The PostgreSQL schema it owns.
    pub schema: &'static str,
    pub migrations: &'static sqlx::migrate::Migrator,
    /// Event types (routing-key patterns) its queue receives; empty for a
    /// module that consumes nothing.
    pub consumes: &'static [&'static str],
    pub init: fn(&mut ModuleContext) -> anyhow::Result<()>,
}

/// What a module sees while it starts, and where it registers what it runs.
pub struct ModuleContext {
    pub config: Arc<Config>,
    /// The connection relays publish on.
    pub publisher: Arc<Bus>,
    /// The connection consumers consume (and dead-letter) on.
    pub subscriber: Arc<Bus>,
    pub authority: Arc<Authority>,
    redis: Arc<Redis>,
    routes: RoutesBuilder,
    health: Vec<&'static str>,
    http: Router,
    tasks: Vec<(String, BoxFuture<anyhow::Result<()>>)>,
    /// Fires when the process stops, once the servers have finished their
    /// last requests; background tasks return soon after.
    pub cancel: CancellationToken,
    readiness: Readiness,
    module: &'static str,
    /// The pools the module asked for, by schema: the dead-letter service
    /// answers through the one on the module's own schema.
    pools: Vec<(String, PgPool)>,
    /// gRPC methods allowed longer than `grpc::SERVER_TIMEOUT`, with their limits.
    long_calls: Vec<(&'static str, Duration)>,
}

impl ModuleContext {
    /// The module's own database pool (its schema on the search path).
    pub fn pool(&mut self, schema: &str) -> anyhow::Result<PgPool> {
        let pool = db::pool(&self.config, schema)?;
        self.readiness.pools.push(pool.clone());
        self.pools.push((schema.to_owned(), pool.clone()));
        Ok(pool)
    }

    /// Redis, counted in readiness once a module asks for it.
    pub fn redis(&mut self) -> Arc<Redis> {
        self.readiness.uses_redis = true;
        self.redis.clone()
    }

    /// Serves `service` on the process's gRPC port, behind authentication.
    pub fn add_grpc<S>(&mut self, service: S)
    where
        S: tower::Service<
                http::Request<tonic::body::Body>,
                Response = http::Response<tonic::body::Body>,
                Error = std::convert::Infallible,
            > + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.health.push(S::NAME);
        self.routes.add_service(service);
    }

    /// Lets calls to one gRPC method (`/package.Service/Method`) run up to
    /// `limit` instead of `grpc::SERVER_TIMEOUT`: a client streaming a
    /// large file.
    pub fn allow_long_call(&mut self, method: &'static str, limit: Duration) {
        self.long_calls.push((method, limit));
    }

    /// Serves `router` on the process's HTTP port.
    pub fn add_http(&mut self, router: Router) {
        self.http = std::mem::take(&mut self.http).merge(router);
    }

    /// Runs `task` until [`ModuleContext::cancel`]; if it fails or returns
    /// early, the whole process stops with an error.
    pub fn spawn<F>(&mut self, name: &str, task: F)
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        self.tasks
            .push((format!("{}/{name}", self.module), Box::pin(task)));
    }
}

/// What `/readyz` checks.
#[derive(Clone)]
struct Readiness {
    started: Arc<AtomicBool>,
    pools: Vec<PgPool>,
    uses_redis: bool,
    redis: Arc<Redis>,
    buses: Vec<Arc<Bus>>,
}

impl Readiness {
    /// `Err` names the first thing that is not ready.
    async fn check(&self) -> Result<(), String> {
        if !self.started.load(Ordering::SeqCst) {
            return Err("starting or stopping".into());
        }
        if !self.buses.iter().all(|bus| bus.is_connected()) {
            return Err("RabbitMQ is not connected".into());
        }
        for pool in &self.pools {
            let ping = tokio::time::timeout(
                Duration::from_secs(2),
                sqlx::query("SELECT 1").execute(pool),
            );
            if !matches!(ping.await, Ok(Ok(_))) {
                return Err("PostgreSQL is not reachable".into());
            }
        }
        if self.uses_redis
            && !matches!(
                tokio::time::timeout(Duration::from_secs(2), self.redis.ping()).await,
                Ok(Ok(()))
            )
        {
            return Err("Redis is not reachable".into());
        }
        Ok(())
    }
}

/// Orders `selected` so that each module comes after those it depends on
/// (dependencies outside the selection are remote and impose no order).
pub fn start_order(selected: &[Module]) -> anyhow::Result<Vec<Module>> {
    let names: BTreeSet<_> = selected.iter().map(|m| m.name).collect();
    let mut ordered: Vec<Module> = Vec::with_capacity(selected.len());
    let mut remaining: Vec<Module> = selected.to_vec();
    while !remaining.is_empty() {
        let before = remaining.len();
        remaining.retain(|module| {
            let ready = module
                .depends_on
                .iter()
                .all(|dep| !names.contains(dep) || ordered.iter().any(|m| m.name == *dep));
            if ready {
                ordered.push(*module);
            }
            !ready
        });
        anyhow::ensure!(
            remaining.len() < before,
            "modules depend on each other in a cycle: {:?}",
            remaining.iter().map(|m| m.name).collect::<Vec<_>>()
        );
    }
    Ok(ordered)
}

/// Applies every selected module's migrations and declares the bus
/// topology (`hotline migrate`), so no event finds its queue missing.
pub async fn migrate(config: &Config, modules: &[Module]) -> anyhow::Result<()> {
    let modules = start_order(modules)?;
    for module in &modules {
        let pool = db::pool(config, module.schema)?;
        db::migrate(&pool, module.schema, module.migrations).await?;
        pool.close().await;
        tracing::info!(module = module.name, "migrated");
    }
    let queues: Vec<(&str, &[&str])> = modules
        .iter()
        .filter(|m| !m.consumes.is_empty())
        .map(|m| (m.name, m.consumes))
        .collect();
    Bus::new(config.amqp_url.clone(), config.namespace.clone(), "migrate")
        .declare_topology(&queues)
        .await
}

/// A started process: its listeners are bound and its modules running.
pub struct App {
    grpc_addr: SocketAddr,
    http_addr: SocketAddr,
    started: Arc<AtomicBool>,
    /// Stops the servers: first, so no request is left half done.
    server_cancel: CancellationToken,
    servers: JoinSet<(String, anyhow::Result<()>)>,
    /// Stops the modules' work, once the servers have drained: a relay
    /// still publishes what the last requests committed.
    cancel: CancellationToken,
    /// Stops the bus connection, after the modules have drained.
    infra_cancel: CancellationToken,
    tasks: JoinSet<(String, anyhow::Result<()>)>,
    /// The two bus connections' reconnect loops.
    bus_tasks: JoinSet<anyhow::Result<()>>,
    health: tonic_health::server::HealthReporter,
}

impl App {
    pub async fn start(mut config: Config, modules: &[Module]) -> anyhow::Result<Self> {
        telemetry::metrics();
        let authority = Arc::new(Authority::new(&config.auth.secret)?);
        let publisher = Bus::new(config.amqp_url.clone(), config.namespace.clone(), "publish");
        let subscriber = Bus::new(config.amqp_url.clone(), config.namespace.clone(), "consume");
        let redis = Arc::new(Redis::new(&config.redis_url, &config.namespace)?);
        let grpc_listener = TcpListener::bind(config.grpc_addr)
            .await
            .with_context(|| format!("binding gRPC on {}", config.grpc_addr))?;
        let http_listener = TcpListener::bind(config.http_addr)
            .await
            .with_context(|| format!("binding HTTP on {}", config.http_addr))?;
        let grpc_addr = grpc_listener.local_addr()?;
        let http_addr = http_listener.local_addr()?;
        // Modules see where this process really listens (port 0 resolved),
        // so a call to a module of this process finds it.
        config.grpc_addr = grpc_addr;
        config.http_addr = http_addr;
        let config = Arc::new(config);

        let cancel = CancellationToken::new();
        let server_cancel = CancellationToken::new();
        let infra_cancel = CancellationToken::new();
        let mut bus_tasks = JoinSet::new();
        bus_tasks.spawn(publisher.clone().run(infra_cancel.clone()));
        bus_tasks.spawn(subscriber.clone().run(infra_cancel.clone()));
        let started = Arc::new(AtomicBool::new(false));
        let mut readiness = Readiness {
            started: started.clone(),
            pools: Vec::new(),
            uses_redis: false,
            redis: redis.clone(),
            buses: vec![publisher.clone(), subscriber.clone()],
        };

        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
        let mut routes = RoutesBuilder::default();
        let mut http = Router::new();
        let mut tasks = JoinSet::new();
        let mut served = Vec::new();
        let mut consumers = Vec::new();
        let mut long_calls = Vec::new();
        for module in start_order(modules)? {
            let mut context = ModuleContext {
                config: config.clone(),
                publisher: publisher.clone(),
                subscriber: subscriber.clone(),
                authority: authority.clone(),
                redis: redis.clone(),
                routes,
                health: Vec::new(),
                http,
                tasks: Vec::new(),
                cancel: cancel.clone(),
                readiness,
                module: module.name,
                pools: Vec::new(),
                long_calls: Vec::new(),
            };
            (module.init)(&mut context)
                .with_context(|| format!("starting module {}", module.name))?;
            if !module.consumes.is_empty() {
                let own = context
                    .pools
                    .iter()
                    .find(|(schema, _)| schema == module.schema);
                let pool = match own {
                    Some((_, pool)) => pool.clone(),
                    None => db::pool(&config, module.schema)?,
                };
                consumers.push((module.name, pool));
            }
            for (name, task) in context.tasks {
                tasks.spawn(async move { (name, task.await) });
            }
            served.extend(context.health);
            long_calls.extend(context.long_calls);
            routes = context.routes;
            http = context.http;
            readiness = context.readiness;
            tracing::info!(module = module.name, "module started");
        }

        // Once per process, for every module here that consumes: a module's
        // name names its queue, its consumer and so its dead letters.
        if !consumers.is_empty() {
            type DeadLetters = DeadLetterServiceServer<DeadLetterApi>;
            served.push(<DeadLetters as NamedService>::NAME);
            routes.add_service(DeadLetters::new(DeadLetterApi::new(consumers)));
        }
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(hotline_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        routes.add_service(health_service).add_service(reflection);
        let grpc_server = Server::builder()
            .trace_fn(telemetry::grpc_server_span)
            .concurrency_limit_per_connection(grpc::CONCURRENCY_PER_CONNECTION)
            .layer(telemetry::RecordGrpcStatus)
            .layer(grpc::Deadlines::new(long_calls))
            .layer(Authenticate::new(authority))
            .add_routes(routes.routes())
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(grpc_listener).with_nodelay(Some(true)),
                server_cancel.clone().cancelled_owned(),
            );
        let mut servers = JoinSet::new();
        servers.spawn(async move {
            let result = grpc_server.await.context("gRPC server failed");
            ("grpc".to_owned(), result)
        });

        let scraped = readiness.clone();
        let http = http
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(move || ready(readiness.clone())))
            .route("/metrics", get(move || metrics(scraped.clone())));
        let http_cancel = server_cancel.clone();
        servers.spawn(async move {
            let result = axum::serve(http_listener, http)
                .with_graceful_shutdown(http_cancel.cancelled_owned())
                .await
                .context("HTTP server failed");
            ("http".to_owned(), result)
        });

        for name in served {
            health
                .set_service_status(name, tonic_health::ServingStatus::Serving)
                .await;
        }
        health
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
        started.store(true, Ordering::SeqCst);
        tracing::info!(%grpc_addr, %http_addr, "hotline is serving");
        Ok(Self {
            grpc_addr,
            http_addr,
            started,
            server_cancel,
            servers,
            cancel,
            infra_cancel,
            tasks,
            bus_tasks,
            health,
        })
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Serves until `stop` resolves or a task fails, then shuts down in
    /// order. `Err` if any task failed.
    pub async fn run_until(mut self, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
        let mut failure = None;
        tokio::select! {
            _ = stop => tracing::info!("stopping"),
            Some(joined) = self.tasks.join_next() => failure = Some(early_exit(joined)),
            Some(joined) = self.servers.join_next() => failure = Some(early_exit(joined)),
        }
        self.started.store(false, Ordering::SeqCst);
        self.health
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
        self.server_cancel.cancel();
        drain(&mut self.servers, "requests", &mut failure).await;
        self.cancel.cancel();
        drain(&mut self.tasks, "background work", &mut failure).await;
        self.infra_cancel.cancel();
        let closing = async { while self.bus_tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(10), closing)
            .await
            .is_err()
        {
            tracing::warn!("the RabbitMQ connections did not close within 10s");
        }
        match failure {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

/// The error of a task that ended while the process was serving.
fn early_exit(
    joined: Result<(String, anyhow::Result<()>), tokio::task::JoinError>,
) -> anyhow::Error {
    let (name, result) = joined.unwrap_or_else(|e| ("task".into(), Err(e.into())));
    let error = result
        .err()
        .unwrap_or_else(|| anyhow::anyhow!("exited unexpectedly"));
    tracing::error!(task = %name, error = format!("{error:#}"), "a task failed; stopping");
    error.context(format!("task {name} failed"))
}

/// Waits up to 30 s for `tasks` to finish, recording the first failure; a
/// drain that times out is a failure too.
async fn drain(
    tasks: &mut JoinSet<(String, anyhow::Result<()>)>,
    what: &str,
    failure: &mut Option<anyhow::Error>,
) {
    let all = async {
        while let Some(joined) = tasks.join_next().await {
            let (name, error) = match joined {
                Ok((name, Err(error))) => (name, error),
                Ok((_, Ok(()))) => continue,
                Err(panic) => ("task".to_owned(), anyhow::Error::new(panic)),
            };
            tracing::error!(task = %name, error = format!("{error:#}"), "failed while stopping");
            failure.get_or_insert(error);
        }
    };
    if tokio::time::timeout(Duration::from_secs(30), all)
        .await
        .is_err()
    {
        tracing::error!("{what} did not drain within 30s");
        tasks.abort_all();
        failure.get_or_insert(anyhow::anyhow!("{what} did not drain within 30s"));
    }
}

/// `/metrics`, with `hotline_ready` checked as `/readyz` would answer now,
/// so an alert sees a process that is up but not ready.
async fn metrics(readiness: Readiness) -> String {
    metrics::describe_gauge!(
        "hotline_ready",
        "1 while /readyz answers 200: every module up, its backing services reachable."
    );
    let ready = readiness.check().await.is_ok();
    metrics::gauge!("hotline_ready").set(if ready { 1.0 } else { 0.0 });
    telemetry::metrics().render()
}

async fn ready(readiness: Readiness) -> (StatusCode, String) {
    match readiness.check().await {
        Ok(()) => (StatusCode::OK, "ready".into()),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, reason),
    }
}
