//! `hotline-loadgen`: load against a running fleet, reported as one JSON
//! object per run. Run on demand; it asserts nothing.
//!
//! `create-tickets --concurrency C --duration D` opens tickets over gRPC
//! from C concurrent callers for D. A ticket counts when its
//! `ticket.created` event has been published and confirmed by RabbitMQ —
//! seen on a queue bound to the fleet's events exchange. Latency runs from
//! the request to that event. A fleet that takes tickets faster than its
//! consumers apply them only piles work up: the run then waits until every
//! module's queue is empty, and `sustained_per_s` counts that time too.
//!
//! `clocks`, `burst` and `restart` load the response clocks (see
//! [`clocks`]). `import` imports a generated installed base, then the same
//! file again (see [`import`]). `entitlement` looks callers up in that
//! base (see [`entitlement`]). `dispatch` routes tickets to a
//! thousand people online (see [`dispatch`]).
//!
//! The fleet is found like the CLI finds it (`HOTLINE_SERVER`,
//! `HOTLINE_TOKEN`); the broker and namespace come from the fleet's own
//! configuration variables (`HOTLINE_AMQP_URL`, `HOTLINE_NAMESPACE`).

mod clocks;
mod dispatch;
mod entitlement;
mod import;
mod mail;
mod phone;

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use clap::{Parser, Subcommand};
use hotline_kit::{
    bus::Bus,
    config::{Config, parse_duration},
    grpc::{self, BearerToken},
    testing::EventTap,
};
use hotline_proto::tickets::v1::{CreateTicketRequest, ticket_service_client::TicketServiceClient};
use serde_json::json;
use tonic::service::interceptor::InterceptedService;

#[derive(Parser)]
#[command(name = "hotline-loadgen")]
struct Args {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Open tickets as fast as C callers can, for D.
    CreateTickets {
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        #[arg(long, default_value = "20s", value_parser = parse_duration)]
        duration: Duration,
        /// gRPC connections the callers share.
        #[arg(long, default_value_t = 4)]
        connections: usize,
    },
    /// Arm ARMED clocks, RATE per second coming due; report breach lag
    /// over WINDOW, and memory per clock. Needs a running `sla`.
    Clocks {
        #[arg(long, default_value_t = 1_000_000)]
        armed: i64,
        #[arg(long, default_value_t = 1_000)]
        rate: u32,
        /// Time before the first clock is due (arming and index rebuild).
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        lead: Duration,
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        window: Duration,
    },
    /// COUNT clocks due in the same second: time until all are escalated.
    /// Needs a running `sla`.
    Burst {
        #[arg(long, default_value_t = 100_000)]
        count: i64,
        #[arg(long, default_value = "15s", value_parser = parse_duration)]
        lead: Duration,
    },
    /// PBX lines playing answered inbound calls (3 events each) for D;
    /// reports events accepted and how fast they became tickets. Needs
    /// `HOTLINE_INTAKE__CTI_TOKEN` and a running fleet.
    Cti {
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        #[arg(long, default_value = "20s", value_parser = parse_duration)]
        duration: Duration,
    },
    /// SMTP sessions sending 20 KB messages with an attachment for D;
    /// reports mails accepted and how fast they became tickets. Needs a
    /// running fleet with `HOTLINE_INTAKE__DOMAINS` including
    /// `support.example` (and `HOTLINE_INTAKE__SMTP_ADDR` if not the default).
    Smtp {
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        #[arg(long, default_value = "20s", value_parser = parse_duration)]
        duration: Duration,
    },
    /// Generates an installed base of CUSTOMERS customers and ASSETS
    /// assets as a CSV, imports it through the running server (a
    /// manager's HOTLINE_TOKEN), then imports it again: seconds and rows/s
    /// of both.
    Import {
        #[arg(long, default_value_t = 100_000)]
        customers: u64,
        #[arg(long, default_value_t = 1_000_000)]
        assets: u64,
        /// Seeds the generator and the run's id in every name: the same
        /// seed makes the same file. Random when not given.
        #[arg(long)]
        seed: Option<u64>,
        /// Also writes the CSV here, for `hotline import installed-base`.
        #[arg(long)]
        save: Option<std::path::PathBuf>,
    },
    /// C callers look up entitlements by phone, email and serial (a random
    /// mix) for D, in the base `import` wrote with the same SEED,
    /// CUSTOMERS and ASSETS (any HOTLINE_TOKEN: agents read).
    Entitlement {
        #[arg(long)]
        seed: u64,
        #[arg(long, default_value_t = 100_000)]
        customers: u64,
        #[arg(long, default_value_t = 1_000_000)]
        assets: u64,
        /// The share of lookups for keys nobody has (0 to 1).
        #[arg(long, default_value_t = 0.0)]
        unknown: f64,
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        #[arg(long, default_value = "20s", value_parser = parse_duration)]
        duration: Duration,
        /// Lookups a second the callers share; 0: as fast as they can.
        #[arg(long, default_value_t = 0)]
        rate: u32,
    },
    /// Imports a small base, adds PEOPLE agents of mixed skills and
    /// regions, states them online, opens tickets naming the base's
    /// serials at RATE a second for D: assignment latency, tickets left
    /// unassigned (and whether someone could have taken them), spread of
    /// load. A manager's HOTLINE_TOKEN; the whole fleet running.
    Dispatch {
        #[arg(long, default_value_t = 1_000)]
        people: usize,
        /// Each person's capacity (awaiting tickets at once).
        #[arg(long, default_value_t = 20)]
        capacity: u32,
        #[arg(long, default_value_t = 500)]
        rate: u32,
        #[arg(long, default_value = "20s", value_parser = parse_duration)]
        duration: Duration,
        /// Seeds the base, the people and the tickets (random when not given).
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Runs `hotline serve --target sla` itself (no other `sla` may run in
    /// the namespace), arms ARMED clocks, kills it with SIGKILL for DOWN,
    /// starts it again: time until every overdue clock has fired.
    Restart {
        /// The `hotline` binary.
        #[arg(long, default_value = "target/release/hotline")]
        hotline: String,
        #[arg(long, default_value_t = 1_000_000)]
        armed: i64,
        #[arg(long, default_value_t = 1_000)]
        rate: u32,
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        lead: Duration,
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        down: Duration,
    },
}

/// Where one ticket is between its request and its event.
enum Progress {
    Requested(Instant),
    /// The event came before the response named the ticket.
    Announced(Instant),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Args::parse().scenario {
        Scenario::CreateTickets {
            concurrency,
            duration,
            connections,
        } => create_tickets(concurrency, duration, connections).await,
        Scenario::Clocks {
            armed,
            rate,
            lead,
            window,
        } => clocks::clocks(armed, rate, lead, window).await,
        Scenario::Burst { count, lead } => clocks::burst(count, lead).await,
        Scenario::Smtp {
            concurrency,
            duration,
        } => mail::smtp(concurrency, duration).await,
        Scenario::Cti {
            concurrency,
            duration,
        } => phone::cti(concurrency, duration).await,
        Scenario::Import {
            customers,
            assets,
            seed,
            save,
        } => {
            let seed = seed.unwrap_or_else(|| uuid::Uuid::new_v4().as_u64_pair().0);
            import::import(customers, assets, seed, save).await
        }
        Scenario::Entitlement {
            seed,
            customers,
            assets,
            unknown,
            concurrency,
            duration,
            rate,
        } => {
            entitlement::entitlement(
                seed,
                customers,
                assets,
                unknown,
                concurrency,
                duration,
                rate,
            )
            .await
        }
        Scenario::Dispatch {
            people,
            capacity,
            rate,
            duration,
            seed,
        } => {
            let seed = seed.unwrap_or_else(|| uuid::Uuid::new_v4().as_u64_pair().0);
            dispatch::dispatch(people, capacity, rate, duration, seed).await
        }
        Scenario::Restart {
            hotline,
            armed,
            rate,
            lead,
            down,
        } => clocks::restart(&hotline, armed, rate, lead, down).await,
    }
}

async fn create_tickets(
    concurrency: usize,
    duration: Duration,
    connections: usize,
) -> anyhow::Result<()> {
    let config = Config::load(None)?;
    let server =
        std::env::var("HOTLINE_SERVER").unwrap_or_else(|_| "http://127.0.0.1:50051".into());
    let token = std::env::var("HOTLINE_TOKEN").context("HOTLINE_TOKEN is not set")?;

    let progress: Arc<Mutex<HashMap<String, Progress>>> = Arc::default();
    let latencies: Arc<Mutex<Vec<f64>>> = Arc::default();
    let confirmed = Arc::new(AtomicU64::new(0));
    let tap = watch_created(
        &config,
        progress.clone(),
        latencies.clone(),
        confirmed.clone(),
    )
    .await?;

    let channels: Vec<_> = (0..connections.max(1))
        .map(|_| grpc::channel(&server))
        .collect::<anyhow::Result<_>>()?;
    let bearer = BearerToken::new(&token)?;
    let errors = Arc::new(AtomicU64::new(0));
    let requests = Arc::new(AtomicU64::new(0));
    let rpc_latencies: Arc<Mutex<Vec<f64>>> = Arc::default();
    let started = Instant::now();
    let deadline = started + duration;
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let callers: Vec<_> = (0..concurrency)
        .map(|caller| {
            let mut client = TicketServiceClient::new(InterceptedService::new(
                channels[caller % channels.len()].clone(),
                bearer.clone(),
            ));
            let (progress, errors, requests, rpc_latencies, latencies, confirmed) = (
                progress.clone(),
                errors.clone(),
                requests.clone(),
                rpc_latencies.clone(),
                latencies.clone(),
                confirmed.clone(),
            );
            let run_id = run_id.clone();
            tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < deadline {
                    n += 1;
                    let sent = Instant::now();
                    let request = CreateTicketRequest {
                        subject: format!("Load {run_id} caller {caller} #{n}: camera offline"),
                        body: "Generated by hotline-loadgen".into(),
                        contact: format!("load{caller}@example.test"),
                        ..Default::default()
                    };
                    requests.fetch_add(1, Ordering::Relaxed);
                    match client.create_ticket(request).await {
                        Ok(response) => {
                            rpc_latencies.lock().unwrap().push(ms(sent.elapsed()));
                            let Some(ticket) = response.into_inner().ticket else {
                                continue;
                            };
                            let mut progress = progress.lock().unwrap();
                            match progress.remove(&ticket.id) {
                                Some(Progress::Announced(at)) => {
                                    latencies.lock().unwrap().push(ms(at.duration_since(sent)));
                                    confirmed.fetch_add(1, Ordering::Relaxed);
                                }
                                _ => {
                                    progress.insert(ticket.id, Progress::Requested(sent));
                                }
                            }
                        }
                        Err(status) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            if errors.load(Ordering::Relaxed) <= 3 {
                                eprintln!("create failed: {status}");
                            }
                        }
                    }
                }
            })
        })
        .collect();
    for caller in callers {
        caller.await?;
    }
    let sending = started.elapsed();
    // Give the relay time to announce what was accepted.
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_secs(30) {
        let waiting = progress
            .lock()
            .unwrap()
            .values()
            .filter(|p| matches!(p, Progress::Requested(_)))
            .count();
        if waiting == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tap.abort();
    let (backlog, drained) = drain(&config).await?;
    let unconfirmed = progress
        .lock()
        .unwrap()
        .values()
        .filter(|p| matches!(p, Progress::Requested(_)))
        .count();
    let mut latencies = std::mem::take(&mut *latencies.lock().unwrap());
    let mut rpc = std::mem::take(&mut *rpc_latencies.lock().unwrap());
    let confirmed = confirmed.load(Ordering::Relaxed);
    let report = json!({
        "scenario": "create-tickets",
        "concurrency": concurrency,
        "connections": connections,
        "duration_s": round(sending.as_secs_f64()),
        "requests": requests.load(Ordering::Relaxed),
        "confirmed": confirmed,
        "unconfirmed": unconfirmed,
        "errors": errors.load(Ordering::Relaxed),
        "throughput_per_s": round(confirmed as f64 / sending.as_secs_f64()),
        "backlog_at_end": backlog,
        "drained_s": round(drained.as_secs_f64()),
        "sustained_per_s": round(confirmed as f64 / (sending + drained).as_secs_f64()),
        "p50_ms": percentile(&mut latencies, 50.0),
        "p90_ms": percentile(&mut latencies, 90.0),
        "p99_ms": percentile(&mut latencies, 99.0),
        "max_ms": percentile(&mut latencies, 100.0),
        "rpc_p50_ms": percentile(&mut rpc, 50.0),
        "rpc_p99_ms": percentile(&mut rpc, 99.0),
    });
    println!("{report}");
    Ok(())
}

/// Waits until the queues of every module of the fleet that consumes
/// events are empty (or 300 s): the messages waiting when it started, and
/// how long emptying them took.
async fn drain(config: &Config) -> anyhow::Result<(u64, Duration)> {
    let bus = Bus::new(config.amqp_url.clone(), config.namespace.clone(), "loadgen");
    let connection =
        lapin::Connection::connect(config.amqp_url.expose(), Default::default()).await?;
    let queues: Vec<String> = hotline::fleet::modules()
        .iter()
        .filter(|m| !m.consumes.is_empty())
        .map(|m| bus.queue(m.name))
        .collect();
    let started = Instant::now();
    let mut first = None;
    loop {
        let mut waiting = 0u64;
        for queue in &queues {
            // A passive declare fails (and closes its channel) for a queue
            // nobody declared: a module the fleet does not run.
            let channel = connection.create_channel().await?;
            let declared = channel
                .queue_declare(
                    queue.as_str().into(),
                    lapin::options::QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    Default::default(),
                )
                .await;
            if let Ok(declared) = declared {
                waiting += u64::from(declared.message_count());
                let _ = channel.close(200, "".into()).await;
            }
        }
        let backlog = *first.get_or_insert(waiting);
        if waiting == 0 || started.elapsed() > Duration::from_secs(300) {
            return Ok((backlog, started.elapsed()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Consumes `ticket.created` from a private queue and matches each event to
/// its request.
async fn watch_created(
    config: &Config,
    progress: Arc<Mutex<HashMap<String, Progress>>>,
    latencies: Arc<Mutex<Vec<f64>>>,
    confirmed: Arc<AtomicU64>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let mut tap = EventTap::bound(config, "ticket.created").await.context(
        "binding to the fleet's events exchange (is the fleet running, HOTLINE_NAMESPACE right?)",
    )?;
    Ok(tokio::spawn(async move {
        while let Some((event, _)) = tap.next(Duration::from_secs(3600)).await {
            let now = Instant::now();
            let mut progress = progress.lock().unwrap();
            match progress.remove(&event.ticket_id) {
                Some(Progress::Requested(sent)) => {
                    latencies.lock().unwrap().push(ms(now.duration_since(sent)));
                    confirmed.fetch_add(1, Ordering::Relaxed);
                }
                Some(announced @ Progress::Announced(_)) => {
                    progress.insert(event.ticket_id, announced);
                }
                None => {
                    progress.insert(event.ticket_id, Progress::Announced(now));
                }
            }
        }
    }))
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// Runs `count` (the items of this run that are done, and all of them,
/// matched by `pattern`) every 100 ms until all are done, or 120 s.
async fn until_done(pool: &sqlx::PgPool, count: &str, pattern: &str) -> anyhow::Result<(i64, i64)> {
    let wait_until = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let (done, total): (i64, i64) = sqlx::query_as(count).bind(pattern).fetch_one(pool).await?;
        if done == total || std::time::Instant::now() > wait_until {
            return Ok((done, total));
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

fn round(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

fn percentile(values: &mut [f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * (values.len() - 1) as f64).round() as usize;
    round(values[rank.min(values.len() - 1)])
}
